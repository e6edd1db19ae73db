"""Any picture of a handwritten digit into MNIST's format, the way MNIST was made (LeCun et al.):
white on black, scaled to fit 20x20 keeping the aspect ratio, placed in 28x28 with its centre of
mass at the centre. Uploads are scans and drawings, but also phone photos of a page: uneven
light and shadows, the desk around the sheet (lighter or darker than the paper), ruled or
squared paper, grain, blur and JPEG. See `mnist_pixels` for how the digit is found in them.
numpy and Pillow only: the front-end workers that run this import neither TensorFlow nor OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

FIELD = 28
BOX = 20
CENTRE = 14.0
# Ink below this fraction of the digit's darkness is noise: it neither counts for the bounding
# box nor survives (paper texture, JPEG ringing). MNIST's own faintest strokes are far above it.
NOISE_FLOOR = 0.08
MIN_CONTRAST = 24.0  # grey levels between paper and ink; below it the image is blank
# A pixel is ink when it is this much darker than the paper around it (a fraction of the
# paper's brightness there: the same under bright light and in a shadow) and at least
# INK_CONTRAST grey levels darker. Printed rulings of lined and squared paper are fainter.
INK_DARKNESS = 0.2
INK_CONTRAST = 16.0
# The paper around each pixel: a grey closing (largest, then smallest value in a square of
# PAPER_RADIUS x the picture's shorter side) removes every dark thing narrower than the square,
# strokes included, and keeps what is wider: light falling off, shadows, the desk's edges.
PAPER_RADIUS = 0.1
PAPER_SCALE = 4
# Larger pictures are first reduced to this size (area average: thin strokes stay, fainter), as
# the digit ends up 20 pixels tall and a 40 MP photo would cost gigabytes of float arrays.
WORKING_SIZE = 448
# A picture this small (MNIST's 28x28, an icon-sized crop) shows no desk or sheet edges: a
# digit along its edge is still the digit.
SMALL_PICTURE = 100
GROW_STEPS = 2  # pixels the faint edges of the strokes are followed beyond the ink found


class BlankImageError(ValueError):
    """No single digit to read: the picture is blank (or has too little contrast), or holds
    nothing digit-like; `SeveralDigitsError` when it holds several digits."""


class SeveralDigitsError(BlankImageError):
    """Two or more separate digit-sized marks side by side: a number, not one digit."""


def mnist_pixels(image: Image.Image) -> np.ndarray:
    """uint8 [28, 28]: white digit on black, centred by centre of mass, as in MNIST.

    The picture is made dark ink on light paper (inverted when it is light on dark, unless the
    light part is a sheet of paper on a dark desk); each pixel's darkness is measured against
    the paper around it (see PAPER_RADIUS), so uneven light and shadows drop out; the marks dark
    enough to be ink are split into connected parts, and the digit is picked among them: not
    touching the picture's edge (the desk, a sheet's edge), not a long thin line (ruled lines,
    a margin), the most ink, with the pieces of the same digit next to it. Raises
    BlankImageError when there is no digit and SeveralDigitsError when there are several.
    """
    image = ImageOps.exif_transpose(image)  # phone photos
    if image.mode in ("1", "P", "PA"):  # their resizing would be nearest-neighbour
        image = image.convert("L" if image.mode == "1" else "RGBA")
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    gray = _dark_on_light(_grayscale(image))
    ink = _digit_ink(gray)
    rows, cols = np.nonzero(ink)
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


def _dark_on_light(gray: np.ndarray) -> np.ndarray:
    """The picture as dark ink on light paper. A dark border is either a light digit on a dark
    ground (inverted) or a sheet of paper on a dark desk (kept): paper is a solid light area,
    strokes are not (no square of a sixth of the picture's side fits in them)."""
    border = float(np.median(_border(gray)))
    if border > 127.5:
        return gray
    if float(gray.max()) - border >= MIN_CONTRAST:
        light = (gray > (border + float(gray.max())) / 2).astype(np.float32)
        if min(light.shape) >= 128:  # a quarter of the size is plenty for a sheet of paper
            light = light[::4, ::4]
        radius = max(4, round(0.06 * min(light.shape)))
        solid = _box_mean(light, radius) > 0.999
        if solid.mean() > 0.02:
            return gray
    inverted: np.ndarray = 255.0 - gray
    return inverted


@dataclass
class _Parts:
    """Connected parts (8-neighbours) of a mask, stored as horizontal runs of pixels."""

    row: np.ndarray  # per run
    start: np.ndarray  # first column
    end: np.ndarray  # last column (inclusive)
    part: np.ndarray  # the part each run belongs to, 0..count-1
    count: int

    def per_part(
        self, values: np.ndarray, reduce: Callable[..., None], initial: float
    ) -> np.ndarray:
        out = np.full(self.count, initial, dtype=np.float64)
        reduce(out, self.part, values)
        return out

    def mask(self, parts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """bool mask of the runs of the given parts."""
        chosen = np.isin(self.part, parts)
        edges = np.zeros((shape[0], shape[1] + 1), np.int32)
        np.add.at(edges, (self.row[chosen], self.start[chosen]), 1)
        np.add.at(edges, (self.row[chosen], self.end[chosen] + 1), -1)
        filled: np.ndarray = np.cumsum(edges, axis=1)[:, : shape[1]] > 0
        return filled


def _parts(mask: np.ndarray) -> _Parts:
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    row, start = np.nonzero(steps == 1)
    _, stop = np.nonzero(steps == -1)
    end = stop - 1
    runs = row.size
    if runs == 0:
        empty = np.zeros(0, np.int64)
        return _Parts(empty, empty, empty, empty, 0)
    stride = width + 2
    start_key, end_key = row * stride + start, row * stride + end
    # the runs of the next row that touch each run (8-neighbours) are a contiguous range
    first = np.searchsorted(end_key, (row + 1) * stride + start - 1, "left")
    last = np.searchsorted(start_key, (row + 1) * stride + end + 1, "right")
    counts = np.maximum(last - first, 0)
    a = np.repeat(np.arange(runs), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    b = first[a] + offsets
    labels = np.arange(runs)
    while True:  # smallest label along each link, then pointer jumping, until stable
        lowest = np.minimum(labels[a], labels[b])
        updated = labels.copy()
        np.minimum.at(updated, a, lowest)
        np.minimum.at(updated, b, lowest)
        updated = updated[updated]
        if np.array_equal(updated, labels):
            break
        labels = updated
    _, part = np.unique(labels, return_inverse=True)
    return _Parts(row, start, end, part.ravel(), int(part.max()) + 1)


def _digit_ink(gray: np.ndarray) -> np.ndarray:
    """float32 ink 0..255 of the digit alone, over zeros."""
    height, width = gray.shape
    smooth = _mean3(gray)  # grain and sensor noise, a third as strong
    paper = np.maximum(_paper(smooth), 1.0)
    darkness = 1.0 - gray / paper
    strong = (1.0 - smooth / paper >= INK_DARKNESS) & (paper - smooth >= INK_CONTRAST)
    parts = _parts(strong)
    if parts.count == 0:
        raise BlankImageError("no digit found: the image is blank or has too little contrast")
    chosen = _pick_digit(parts, darkness, (height, width))
    ink_mask = parts.mask(chosen, (height, width))
    reference = float(darkness[ink_mask].max())
    if reference * float(np.median(paper[ink_mask])) < MIN_CONTRAST:
        raise BlankImageError("no digit found: the image is blank or has too little contrast")
    level = np.clip(darkness / reference, 0.0, 1.0)
    faint = level >= NOISE_FLOOR
    grown = ink_mask & faint
    for _ in range(GROW_STEPS):  # the strokes' faint edges, not the ruled lines they cross
        grown = _running(grown, 1, 0, np.maximum)
        grown = _running(grown, 1, 1, np.maximum) & faint
    ink: np.ndarray = np.where(grown, level * 255.0, 0.0).astype(np.float32)
    return ink


def _pick_digit(parts: _Parts, darkness: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The parts that make the digit (indices into `parts`)."""
    height, width = shape
    lengths = (parts.end - parts.start + 1).astype(np.float64)
    cumulative = np.zeros((height, width + 1), np.float32)
    np.cumsum(darkness, axis=1, out=cumulative[:, 1:])
    mass_of_runs = cumulative[parts.row, parts.end + 1] - cumulative[parts.row, parts.start]
    area = np.bincount(parts.part, lengths, parts.count)
    mass = np.bincount(parts.part, mass_of_runs, parts.count)
    top = parts.per_part(parts.row, np.minimum.at, np.inf)
    bottom = parts.per_part(parts.row, np.maximum.at, -np.inf)
    left = parts.per_part(parts.start, np.minimum.at, np.inf)
    right = parts.per_part(parts.end, np.maximum.at, -np.inf)
    tall, wide = bottom - top + 1, right - left + 1
    side = min(height, width)
    edge = (top == 0) | (left == 0) | (bottom == height - 1) | (right == width - 1)
    # pixels on the picture's edge: a stroke's width for a digit that runs off it, the whole
    # side for the desk or the sheet's edge
    on_edge = np.where((parts.row == 0) | (parts.row == height - 1), lengths, 0.0)
    on_edge += (parts.start == 0).astype(np.float64) + (parts.end == width - 1)
    along_edge = np.bincount(parts.part, on_edge, parts.count) > 0.3 * np.maximum(tall, wide)
    length = np.hypot(tall, wide)
    line = (length >= 0.25 * side) & (area < 0.02 * length**2)  # ruled lines, margins, edges
    big_enough = area >= max(4.0, (0.015 * side) ** 2)
    # desk, shadows and corners fill their box; a slender mark (a "1") does too, but is a stroke
    slender = np.minimum(tall, wide) < 0.3 * np.maximum(tall, wide)
    stroke_like = (area < 0.6 * tall * wide) | slender
    plausible = big_enough & ~line & ~along_edge
    candidates = plausible & ~edge  # not the desk, a pen or anything else from outside
    inside = bool(candidates.any())
    if not inside:  # a digit that runs off the picture (a tight crop, a drawing)
        candidates = plausible
    if not candidates.any() and side < SMALL_PICTURE:  # too small to show a desk: any mark
        candidates = big_enough & ~line
    if not candidates.any():
        raise BlankImageError("no digit found: nothing in the image looks like a handwritten digit")
    index = np.flatnonzero(candidates)
    main = int(index[np.argmax(mass[index])])
    size = max(tall[main], wide[main])
    gap = 0.15 * size
    near = (
        (left <= right[main] + gap)
        & (right >= left[main] - gap)
        & (top <= bottom[main] + gap)
        & (bottom >= top[main] - gap)
    )
    # the digit's other pieces; in a photo, none from outside the picture (a pen beside it)
    from_outside = not inside or side < SMALL_PICTURE
    pieces = candidates | (plausible & (area <= area[main]) & from_outside)
    chosen: np.ndarray = np.flatnonzero(pieces & near)
    # another mark as large as the digit, beside it: a number of several digits
    overlap = np.minimum(bottom, bottom[main]) - np.maximum(top, top[main]) + 1
    others = (
        candidates
        & ~near
        & stroke_like
        & (mass >= 0.3 * mass[main])
        & (tall >= 0.5 * tall[main])
        & (tall <= 2.0 * tall[main])
        & (overlap >= 0.5 * np.minimum(tall, tall[main]))
    )
    if others.any():
        count = int(others.sum()) + 1
        raise SeveralDigitsError(
            f"several digits found ({count} side by side): upload a picture of one digit"
        )
    return chosen


def _running(
    values: np.ndarray, radius: int, axis: int, op: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """op (np.maximum or np.minimum) over the window [i - radius, i + radius] along `axis`,
    edges repeated: windows doubled log2(2r + 1) times, then two overlapping ones combined."""
    if axis == 1:
        return _running(values.T, radius, 0, op).T
    width = 2 * radius + 1
    result = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    count = values.shape[0]
    span = 1
    while span * 2 <= width:
        result = op(result[:-span], result[span:])
        span *= 2
    rest = width - span
    out: np.ndarray = op(result[:count], result[rest : rest + count])
    return out


def _paper(smooth: np.ndarray) -> np.ndarray:
    """The paper's brightness around each pixel (see PAPER_RADIUS): a closing computed on the
    picture reduced PAPER_SCALE times (light and shadows vary slowly), scaled back up."""
    height, width = smooth.shape
    scale = PAPER_SCALE if min(height, width) >= 32 * PAPER_SCALE else 1
    radius = max(8, round(PAPER_RADIUS * min(height, width)))
    if scale == 1:
        return _closing(smooth, radius)
    small = Image.fromarray(smooth, mode="F").resize(
        (width // scale, height // scale), Image.Resampling.BOX
    )
    closed = _closing(np.asarray(small, dtype=np.float32), max(4, radius // scale))
    large = Image.fromarray(closed, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(large, dtype=np.float32)


def _closing(values: np.ndarray, radius: int) -> np.ndarray:
    """Grey closing with a (2r+1)^2 square: removes dark features narrower than the square."""
    dilated = _running(_running(values, radius, 0, np.maximum), radius, 1, np.maximum)
    return _running(_running(dilated, radius, 0, np.minimum), radius, 1, np.minimum)


def _mean3(values: np.ndarray) -> np.ndarray:
    """float32 mean over the 3x3 window around each pixel (edges repeated)."""
    padded = np.pad(values.astype(np.float32, copy=False), 1, mode="edge")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    window: np.ndarray = (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / np.float32(9)
    return window


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """float32 mean over the (2r+1)x(2r+1) window around each pixel (edges repeated), from a
    summed-area table: the same cost for any radius."""
    size = 2 * radius + 1
    padded = np.pad(values.astype(np.float64, copy=False), radius, mode="edge")
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
    np.cumsum(np.cumsum(padded, axis=0), axis=1, out=table[1:, 1:])
    height, width = values.shape
    window = (
        table[size : size + height, size : size + width]
        - table[:height, size : size + width]
        - table[size : size + height, :width]
        + table[:height, :width]
    )
    return (window / (size * size)).astype(np.float32)


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
