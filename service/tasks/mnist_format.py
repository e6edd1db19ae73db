"""Any picture of a handwritten digit into MNIST's format, the way MNIST was made (LeCun et al.):
white on black, scaled to fit 20x20 keeping the aspect ratio, placed in 28x28 with its centre of
mass at the centre. Photos are dark ink on light paper, off-centre, large: see `mnist_pixels`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps

FIELD = 28
BOX = 20
CENTRE = 14.0
# Ink below this fraction of the image's contrast is noise: it neither counts for the bounding
# box nor survives (paper texture, JPEG ringing). MNIST's own faintest strokes are far above it.
NOISE_FLOOR = 0.08
MIN_CONTRAST = 24.0  # grey levels between background and ink; below it the image is blank
# Paper grain (photos): ink is this many standard deviations of the grain above the paper, and
# so is the mean of a window around it, where the grain averages down to NOISE_FLOOR / 5.
GRAIN_SIGMAS = 4.0
WINDOW_SIGMAS = 5.0
# Larger pictures are first reduced to this size (area average: thin strokes stay, fainter), as
# the digit ends up 20 pixels tall and a 40 MP photo would cost gigabytes of float arrays.
WORKING_SIZE = 560


class BlankImageError(ValueError):
    """No digit: the image has (next to) no contrast between ink and background."""


def mnist_pixels(image: Image.Image) -> np.ndarray:
    """uint8 [28, 28]: white digit on black, centred by centre of mass, as in MNIST."""
    image = ImageOps.exif_transpose(image)  # phone photos
    if image.mode in ("1", "P", "PA"):  # their resizing would be nearest-neighbour
        image = image.convert("L" if image.mode == "1" else "RGBA")
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    gray = _grayscale(image)
    if np.median(_border(gray)) > 127.5:  # light paper
        gray = 255.0 - gray
    ink = _ink(gray)
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        raise BlankImageError("no digit found: the image is blank or has too little contrast")
    cropped = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return _centre_by_mass(_fit_box(cropped))


def _grayscale(image: Image.Image) -> np.ndarray:
    """float32 grey levels 0..255, alpha resolved, 16-bit modes scaled down."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image, dtype=np.float32) / 257.0
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0, 255)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    luminance = np.asarray(rgba.convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    if alpha.min() == 1.0:
        return luminance
    if alpha.sum() == 0:
        return np.zeros_like(luminance)
    ink_is_dark = float((luminance * alpha).sum() / alpha.sum()) < 127.5
    background = 255.0 if ink_is_dark else 0.0
    composited: np.ndarray = luminance * alpha + background * (1.0 - alpha)
    return composited


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink intensity 0..255 over a zero background, contrast stretched, noise cleared: faint ink,
    ink within the paper's grain (measured on the border), ink in a neighbourhood of paper on
    average (grain far from any stroke), lone specks (JPEG ringing, dust)."""
    border = _border(gray)
    background = float(np.median(border))
    contrast = float(gray.max()) - background
    if contrast < MIN_CONTRAST:
        return np.zeros_like(gray)
    level = (gray - background) / contrast
    # the paper's grain: a robust standard deviation (MAD) of the border, in contrast units
    grain = 1.4826 * float(np.median(np.abs(border - background))) / contrast
    ink = np.clip(level, 0.0, 1.0)
    ink[ink < max(NOISE_FLOOR, GRAIN_SIGMAS * grain)] = 0.0
    if WINDOW_SIGMAS * grain > NOISE_FLOOR:
        # a (2r+1)^2 window's mean has 1/(2r+1) of the grain: r so that it is NOISE_FLOOR / 5
        radius = math.ceil((WINDOW_SIGMAS * grain / NOISE_FLOOR - 1) / 2)
        ink[_box_mean(level, radius) < NOISE_FLOOR] = 0.0
    inked = (ink > 0).astype(np.float32)
    ink[(inked > 0) & (_box_mean(inked, 1) < 1.5 / 9)] = 0.0  # no inked neighbour: a speck
    return ink * 255.0


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """float32 mean over the (2r+1)x(2r+1) window around each pixel (edges repeated). Sums of
    shifted slices, one axis at a time: the radius is small and the image at most 560 pixels."""
    size = 2 * radius + 1
    padded = np.pad(values.astype(np.float32, copy=False), radius, mode="edge")
    height, width = values.shape
    columns = padded[:height].copy()
    for shift in range(1, size):
        columns += padded[shift : shift + height]
    window = columns[:, :width].copy()
    for shift in range(1, size):
        window += columns[:, shift : shift + width]
    window /= size * size
    return window


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Scaled (anti-aliased, aspect ratio kept) so the longer side is 20 pixels."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink.astype(np.float32), mode="F").resize(
        size, Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Shifted by whole pixels (as MNIST) so the centre of mass is at CENTRE, the mean one of
    MNIST's test set in pixel-index coordinates."""
    height, width = digit.shape
    rows, cols = np.indices(digit.shape)
    mass = float(digit.sum())
    if mass == 0.0:  # scaling erased it (a speck): place the box in the middle
        top, left = (FIELD - height) // 2, (FIELD - width) // 2
    else:
        top = round(CENTRE - float((rows * digit).sum()) / mass)
        left = round(CENTRE - float((cols * digit).sum()) / mass)
        # the whole digit stays in the field, even when its mass is lopsided
        top = min(max(top, 0), FIELD - height)
        left = min(max(left, 0), FIELD - width)
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return np.rint(field).astype(np.uint8)
