"""Pictures in MNIST's format that are not one digit, for outlier exposure (Hendrycks et al.,
2019): trained towards the uniform answer, they teach the network to be unsure of what it was not
made for, where a plain CNN answers random noise as "8" at 99.99 %. Temperature scaling alone
cannot do that: it rescales every answer alike.

Kinds (uint8 [28, 28], white on black like MNIST): speckle noise of any density, scattered blobs,
two digits side by side (the task API's "one digit" contract), a digit's fragment too small to
read, grids and ruled lines, and blank or nearly blank fields."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Outlier = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def speckle(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    density = rng.uniform(0.02, 0.5)
    return ((rng.random((28, 28)) < density) * rng.uniform(128, 255)).astype(np.uint8)


def blobs(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    image = np.zeros((28, 28), np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    for _ in range(rng.integers(3, 9)):
        r, c, radius = rng.uniform(0, 28), rng.uniform(0, 28), rng.uniform(1, 3.5)
        image = np.maximum(image, np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / radius**2))
    return (255 * image).astype(np.uint8)


def two_digits(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """Two digits, each squeezed to half the width, side by side."""
    first, second = digits[rng.integers(len(digits), size=2)]
    halves = [_squeeze_width(d) for d in (first, second)]
    return np.concatenate(halves, axis=1)


def fragment(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """A corner of a digit (a quarter of its field), blown up: strokes, but no digit."""
    digit = digits[rng.integers(len(digits))]
    top, left = rng.integers(4, 11, size=2)
    piece = digit[top : top + 10, left : left + 10]
    scaled = np.kron(piece, np.ones((2, 2), np.uint8))  # 20x20
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 4:24] = scaled
    return image


def grid(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    image = np.zeros((28, 28), np.uint8)
    spacing = int(rng.integers(3, 8))
    offset = int(rng.integers(spacing))
    image[offset::spacing, :] = 255
    if rng.random() < 0.5:
        image[:, offset::spacing] = 255
    return image


def faint(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """A blank field with a few faint or bright specks."""
    image = (rng.random((28, 28)) * rng.uniform(0, 40)).astype(np.uint8)
    for _ in range(rng.integers(0, 4)):
        image[rng.integers(28), rng.integers(28)] = 255
    return image


KINDS: tuple[Outlier, ...] = (speckle, blobs, two_digits, fragment, grid, faint)


def outliers(count: int, digits: np.ndarray, seed: int) -> np.ndarray:
    """`count` outliers, the kinds in turn, drawn from `seed` (and `digits`' images)."""
    rng = np.random.default_rng(seed)
    return np.stack([KINDS[i % len(KINDS)](rng, digits) for i in range(count)])


def _squeeze_width(digit: np.ndarray) -> np.ndarray:
    """28x28 -> 28x14 by averaging column pairs."""
    squeezed: np.ndarray = digit.reshape(28, 14, 2).mean(axis=2).astype(np.uint8)
    return squeezed
