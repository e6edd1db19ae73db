"""Digit-image preprocessing (`service.tasks.mnist_format.mnist_pixels`): any picture of a
handwritten digit must come out in MNIST's format, close to what MNIST itself holds.

Unit tests (no server, no TensorFlow): the ten MNIST test digits in tests/fixtures/mnist, drawn
in every way an upload can arrive (ink colour, image mode, file format, EXIF orientation, a
large canvas, paper grain), decoded by the gateway's own decoder (`uploads.open_image`) and
compared with the original 28x28 digit; plus synthetic shapes for geometry (aspect ratio, tiny
and lopsided digits) and blank pictures; phone photos of a sheet of paper (uneven light, a
lighter or darker desk around the sheet, lined and squared paper, a turned sheet) and pictures
of several digits.

End to end: real MNIST test digits in each upload variant, sent to `POST /api/v1/digits` of a
server with the committed models, must be recognised by the shipped `digits` model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from service.tasks.mnist_format import (
    BOX,
    CENTRE,
    FIELD,
    BlankImageError,
    SeveralDigitsError,
    mnist_pixels,
)
from service.tasks.uploads import Upload, open_image
from tests.conftest import FIXTURES, encode, png, shipped_version

pytest_plugins = ["tests.gateway_fixtures"]

MAX_PIXELS = 40_000_000  # the gateway's default max_image_pixels
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
BLUE_INK = (25, 45, 150)


# --- helpers ------------------------------------------------------------------------------


def fixture_digits() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 [28, 28] white on black): the first MNIST test image of each digit."""
    pngs = sorted((FIXTURES / "mnist").glob("test*_label*.png"))
    assert len(pngs) == 10, pngs
    return [(p.stem, np.asarray(Image.open(p).convert("L"))) for p in pngs]


DIGITS = fixture_digits()
DIGIT_IDS = [name for name, _ in DIGITS]


def decode(data: bytes) -> Image.Image:
    """As the gateway opens an upload (same formats, same checks)."""
    return open_image(Upload("upload", "", data), max_pixels=MAX_PIXELS)


def preprocess(data: bytes) -> np.ndarray:
    return mnist_pixels(decode(data))


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in grey levels (0..255)."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def shape_match(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the two pictures, the best over shifts of up to one pixel. For results
    that were resampled on the way (a scaled canvas, a photo): MNIST shifts by whole pixels,
    so a sub-pixel difference in the centre of mass moves the whole digit by one pixel, which
    a pixel-wise difference would count as a different digit."""
    target = b.astype(np.float64).ravel()
    return max(
        float(np.corrcoef(np.roll(a.astype(np.float64), (dy, dx), (0, 1)).ravel(), target)[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def bounding_box(pixels: np.ndarray) -> tuple[int, int]:
    """(height, width) of the non-zero pixels."""
    rows, cols = np.nonzero(pixels)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(pixels.shape)
    mass = float(pixels.sum())
    return float((rows * pixels).sum()) / mass, float((cols * pixels).sum()) / mass


def assert_mnist_placement(pixels: np.ndarray, what: str = "") -> None:
    """MNIST's geometry: uint8 28x28, ink's longest side 20, centre of mass at (14, 14)."""
    assert pixels.shape == (FIELD, FIELD) and pixels.dtype == np.uint8, what
    assert max(bounding_box(pixels)) == BOX, f"{what}: bounding box {bounding_box(pixels)}"
    row, col = centre_of_mass(pixels)
    assert abs(row - CENTRE) <= 1 and abs(col - CENTRE) <= 1, f"{what}: centre {row}, {col}"


def blend(ink: np.ndarray, paper: tuple[int, ...], colour: tuple[int, ...]) -> np.ndarray:
    """uint8 [h, w, channels]: `colour` ink over `paper`, weighted by `ink` (0..255)."""
    weight = ink.astype(np.float64)[..., np.newaxis] / 255.0
    mixed = np.asarray(paper, np.float64) * (1 - weight) + np.asarray(colour, np.float64) * weight
    return np.rint(mixed).astype(np.uint8)


def on_canvas(
    digit: np.ndarray, *, scale: int, size: tuple[int, int], top_left: tuple[int, int]
) -> np.ndarray:
    """The white-on-black digit scaled up (bicubic) and placed on a larger black canvas;
    size = (width, height), top_left = (row, column)."""
    side = 28 * scale
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    canvas = np.zeros((size[1], size[0]), np.uint8)
    top, left = top_left
    canvas[top : top + side, left : left + side] = np.asarray(big)
    return canvas


def paper_photo(
    digit: np.ndarray,
    seed: int,
    *,
    grain: float = 6.0,
    size: tuple[int, int] = (300, 220),
    scale: int = 5,
    top_left: tuple[int, int] = (30, 140),
) -> bytes:
    """A photo-like JPEG: dark ink on light grey paper with grain (Gaussian noise of `grain`
    grey levels) and uneven light, the digit scaled up and off-centre on a larger canvas."""
    rng = np.random.default_rng(seed)
    ink = on_canvas(digit, scale=scale, size=size, top_left=top_left) / 255.0
    rows, cols = np.indices(ink.shape)
    light = 8.0 * (cols / size[0] - 0.5) - 5.0 * (rows / size[1] - 0.5)
    paper, dark = 212.0, 45.0
    grey = paper + light - (paper - dark) * ink + rng.normal(0.0, grain, ink.shape)
    return encode(Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)), "JPEG")


# --- every way an upload can hold the same 28x28 picture -------------------------------------


def rgba(digit: np.ndarray, colour: tuple[int, int, int]) -> bytes:
    """Ink of `colour` on a fully transparent canvas whose hidden colour is the ink's too: the
    digit is only in the alpha channel."""
    pixels = np.dstack([np.full((*digit.shape, 3), colour, np.uint8), digit])
    return encode(Image.fromarray(pixels, "RGBA"), "PNG")


def la_dark_ink(digit: np.ndarray) -> bytes:
    pixels = np.dstack([np.zeros_like(digit), digit])
    return encode(Image.fromarray(pixels, "LA"), "PNG")


def palette(digit: np.ndarray) -> bytes:
    return encode(Image.fromarray(blend(digit, WHITE, BLUE_INK)).quantize(64), "PNG")


def palette_gif(digit: np.ndarray) -> bytes:
    """A GIF whose white paper is the transparent palette entry."""
    return encode(Image.fromarray(255 - digit).convert("P"), "GIF", transparency=255)


def sixteen_bit(digit: np.ndarray) -> bytes:
    return encode(Image.fromarray((255 - digit).astype(np.uint16) * 257), "PNG")


def cmyk_jpeg(digit: np.ndarray) -> bytes:
    cmyk = Image.fromarray(blend(digit, WHITE, BLUE_INK)).convert("CMYK")
    return encode(cmyk, "JPEG", quality=95)


# name: (make the upload from the white-on-black digit, mode it must decode to, largest mean
# absolute difference from the original digit). Lossless variants differ from MNIST by MNIST's
# own rounding (the ten digits measure at most 0.34 grey levels), lossy ones a little more
# (measured: palette 0.55, WebP 0.79, CMYK JPEG 0.85, JPEG at quality 90 1.0); each bound is
# about twice what was measured.
VARIANTS: dict[str, tuple[Callable[[np.ndarray], bytes], str, float]] = {
    "png white on black": (png, "L", 0.7),
    "png black on white": (lambda d: png(255 - d), "L", 0.7),
    "rgb blue ink on white": (lambda d: png(blend(d, WHITE, BLUE_INK)), "RGB", 1.0),
    "rgba dark ink on transparent": (lambda d: rgba(d, BLACK), "RGBA", 0.7),
    "rgba white ink on transparent": (lambda d: rgba(d, WHITE), "RGBA", 0.7),
    "la dark ink on transparent": (la_dark_ink, "LA", 0.7),
    "palette": (palette, "P", 1.2),
    "palette gif, transparent paper": (palette_gif, "P", 0.7),
    "16-bit grey": (sixteen_bit, "I;16", 0.7),
    "cmyk jpeg": (cmyk_jpeg, "CMYK", 1.7),
    "jpeg quality 90": (lambda d: encode(Image.fromarray(255 - d), "JPEG", quality=90), "L", 2.0),
    "bmp": (lambda d: encode(Image.fromarray(255 - d).convert("RGB"), "BMP"), "RGB", 0.7),
    "webp": (lambda d: encode(Image.fromarray(255 - d), "WEBP", quality=90), "RGB", 1.6),
}


# --- unit tests ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "digit"), DIGITS, ids=DIGIT_IDS)
def test_an_mnist_digit_comes_back_as_it_was(name: str, digit: np.ndarray) -> None:
    pixels = preprocess(png(digit))
    assert pixels.shape == (28, 28)
    assert pixels.dtype == np.uint8
    # MNIST digits are already in this format: only MNIST's own rounding differs
    assert mad(pixels, digit) < 0.5, f"{name}: {mad(pixels, digit):.2f}"
    assert_mnist_placement(pixels, name)


@pytest.mark.parametrize(("name", "digit"), DIGITS, ids=DIGIT_IDS)
def test_black_on_white_is_the_same_as_white_on_black(name: str, digit: np.ndarray) -> None:
    np.testing.assert_array_equal(preprocess(png(255 - digit)), preprocess(png(digit)), name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_mode_and_format_gives_the_original_digit(variant: str) -> None:
    make, mode, bound = VARIANTS[variant]
    assert decode(make(DIGITS[0][1])).mode == mode  # the variant is what it says it is
    differences = {name: round(mad(preprocess(make(digit)), digit), 2) for name, digit in DIGITS}
    assert max(differences.values()) < bound, differences


def test_lossy_jpeg_keeps_the_shape() -> None:
    # At quality 75 a 28x28 JPEG rings around the strokes; the ringing must not count as ink
    # (it would widen the bounding box and shrink the digit). Measured: 0.886 at worst.
    for name, digit in DIGITS:
        pixels = preprocess(encode(Image.fromarray(255 - digit), "JPEG", quality=75))
        assert shape_match(pixels, digit) > 0.85, name
        assert_mnist_placement(pixels, name)


@pytest.mark.parametrize(
    "top_left", [(0, 0), (10, 15), (30, 80), (60, 160)], ids=["corner", "top", "middle", "bottom"]
)
def test_a_digit_off_centre_on_a_large_canvas_is_normalised(top_left: tuple[int, int]) -> None:
    for name, digit in DIGITS:
        canvas = on_canvas(digit, scale=5, size=(300, 200), top_left=top_left)
        pixels = preprocess(png(255 - canvas))
        assert_mnist_placement(pixels, name)
        assert shape_match(pixels, digit) > 0.85, name  # measured: 0.90 at worst


@pytest.mark.parametrize("grain", [6.0, 10.0])
def test_a_photo_of_paper_with_grain_gives_the_digit(grain: float) -> None:
    # light grey paper, uneven light, sensor grain, JPEG: the grain must neither count for the
    # bounding box nor survive as haze. Measured: 0.908 at worst.
    for seed, (name, digit) in enumerate(DIGITS):
        pixels = preprocess(paper_photo(digit, seed, grain=grain))
        assert_mnist_placement(pixels, name)
        assert shape_match(pixels, digit) > 0.85, name
        assert haze(pixels) == 0, name


def haze(pixels: np.ndarray) -> int:
    """The brightest pixel more than two pixels away from the box around the strong ink."""
    rows, cols = np.nonzero(pixels > 64)
    outside = np.ones(pixels.shape, bool)
    outside[max(rows.min() - 2, 0) : rows.max() + 3, max(cols.min() - 2, 0) : cols.max() + 3] = 0
    return int(pixels[outside].max(initial=0))


def test_a_phone_sized_photo_gives_the_digit() -> None:
    name, digit = DIGITS[7]
    data = paper_photo(digit, 7, size=(2000, 1500), scale=30, top_left=(200, 900))
    pixels = preprocess(data)
    assert_mnist_placement(pixels, name)
    assert shape_match(pixels, digit) > 0.85


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    name, digit = DIGITS[0]  # a 7: no rotation of it looks like it
    upright = Image.fromarray(255 - on_canvas(digit, scale=2, size=(90, 60), top_left=(2, 10)))
    # exif_transpose turns 6 by 270 degrees and 8 by 90 degrees; store the inverse
    stored = upright.rotate(90 if orientation == 6 else 270, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = encode(stored, "JPEG", quality=95, exif=exif)
    assert decode(tagged).size == (60, 90)  # as stored: portrait

    pixels = preprocess(tagged)
    assert_mnist_placement(pixels, name)
    assert shape_match(pixels, preprocess(encode(upright, "JPEG", quality=95))) > 0.97
    assert shape_match(pixels, digit) > 0.9
    # the test can tell: the same picture without its orientation is another shape
    assert shape_match(preprocess(encode(stored, "JPEG", quality=95)), digit) < 0.5


def test_a_tall_digit_stays_tall_and_a_wide_one_wide() -> None:
    name, one = DIGITS[2]
    assert name.endswith("label1") and bounding_box(one) == (20, 9)
    canvas = on_canvas(one, scale=5, size=(300, 200), top_left=(20, 100))
    height, width = bounding_box(preprocess(png(255 - canvas)))
    assert height == 20 and 7 <= width <= 10, (height, width)

    bar = np.full((200, 200), 255, np.uint8)
    bar[20:180, 90:114] = 0  # 160 tall, 24 wide: 20 x 3 after scaling
    assert bounding_box(preprocess(png(bar))) in {(20, 3), (20, 4)}
    assert bounding_box(preprocess(png(bar.T.copy()))) in {(3, 20), (4, 20)}


SEVEN_5X7 = """
#####
....#
...#.
..#..
..#..
.#...
.#...
"""


def test_a_tiny_digit_is_scaled_up() -> None:
    bitmap = np.array([[c == "#" for c in row] for row in SEVEN_5X7.split()], np.uint8) * 255
    assert bitmap.shape == (7, 5)
    page = np.full((40, 60), 255, np.uint8)
    page[10:17, 30:35] = 255 - bitmap
    pixels = preprocess(png(page))
    assert_mnist_placement(pixels)
    assert bounding_box(pixels) == (20, 14)  # 7x5 scaled by 20/7, the aspect ratio kept
    # the same seven drawn big gives the same picture
    big = np.asarray(Image.fromarray(page).resize((600, 400), Image.Resampling.NEAREST))
    assert shape_match(pixels, preprocess(png(big))) > 0.9


def lopsided_digit() -> np.ndarray:
    """Black on white: a T, a heavy bar on top of a long thin stem. Its centre of mass is so
    near the bar that with the whole T in the field it is 1.8 to 2.8 pixels off (14, 14)."""
    page = np.full((140, 140), 255, np.uint8)
    page[20:36, 20:120] = 0
    page[36:120, 68:72] = 0
    return page


@pytest.mark.parametrize("turns", [0, 1, 2, 3], ids=["bar up", "left", "down", "right"])
def test_a_lopsided_digit_stays_inside_the_field(turns: int) -> None:
    pixels = preprocess(png(np.rot90(lopsided_digit(), turns).copy()))
    assert pixels.shape == (28, 28)
    # the centre of mass cannot be at (14, 14): the stem would leave the field ...
    row, col = centre_of_mass(pixels)
    assert max(abs(row - CENTRE), abs(col - CENTRE)) > 1.5, (row, col)
    # ... so the T is shifted only as far as the field allows, and is whole
    assert bounding_box(pixels) == (BOX, BOX)
    stem_end = [pixels[-1], pixels[:, -1], pixels[0], pixels[:, 0]][turns]
    assert stem_end.max() > 0, "the stem's end should touch the field's edge"


def grainy_paper(size: tuple[int, int], grain: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    grey = 212.0 + rng.normal(0.0, grain, (size[1], size[0]))
    return encode(Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)), "JPEG")


def gradient_paper() -> np.ndarray:
    rows, cols = np.indices((120, 160))
    return np.rint(200 + 10 * cols / 160 + 5 * rows / 120).astype(np.uint8)  # 15 levels


def lone_speck() -> np.ndarray:
    page = np.full((48, 64), 255, np.uint8)
    page[20, 30] = 0
    return page


BLANKS: dict[str, Callable[[], bytes]] = {
    "white": lambda: png(np.full((64, 48), 255, np.uint8)),
    "black": lambda: png(np.zeros((64, 48), np.uint8)),
    "mid grey": lambda: png(np.full((64, 48), 128, np.uint8)),
    "one pixel": lambda: png(np.zeros((1, 1), np.uint8)),
    "paper with uneven light": lambda: png(gradient_paper()),
    "fully transparent": lambda: rgba(np.zeros((64, 48), np.uint8), BLACK),
    "paper with grain": lambda: grainy_paper((300, 220), grain=10.0),
    "paper with heavy grain": lambda: grainy_paper((300, 220), grain=20.0),
    "a lone speck of dust": lambda: png(lone_speck()),
}


@pytest.mark.parametrize("blank", list(BLANKS))
def test_a_blank_picture_raises_blank_image_error(blank: str) -> None:
    with pytest.raises(BlankImageError, match="no digit"):
        preprocess(BLANKS[blank]())


# --- phone photos of a sheet of paper (issue 25) ---------------------------------------------


def phone_photo(
    digits: list[np.ndarray],
    seed: int,
    *,
    falloff: float = 0.0,
    desk: float | None = None,
    ruling: str = "",
    turn: float = 3.0,
    ink: tuple[int, int, int] = (30, 30, 40),
    digit_px: int = 150,
) -> bytes:
    """A 400x400 JPEG of a sheet of light paper with `digits` written side by side in its
    middle (each MNIST digit's 20x20 box `digit_px` tall), the sheet turned by `turn` degrees;
    the light falling off by `falloff` from one side to the other; the sheet on a desk of grey
    level `desk` that shows on two sides; printed lines ("lined": ruled every 16 px with a red
    margin; "squared": a 10 px grid); blur, sensor noise and JPEG at quality 80."""
    rng = np.random.default_rng(seed)
    size = 400
    paper = np.empty((size, size, 3), np.float64)
    paper[:] = (228, 226, 218) if desk is None or desk < 200 else (200, 198, 192)
    sheet = Image.fromarray(paper.astype(np.uint8))
    draw = ImageDraw.Draw(sheet)
    if ruling == "lined":
        for y in range(7, size, 16):
            draw.line([(0, y), (size, y)], fill=(150, 180, 225), width=1)
        draw.line([(40, 0), (40, size)], fill=(215, 80, 90), width=2)
    elif ruling == "squared":
        for position in range(4, size, 10):
            draw.line([(0, position), (size, position)], fill=(160, 180, 210), width=1)
            draw.line([(position, 0), (position, size)], fill=(160, 180, 210), width=1)
    rgb = np.asarray(sheet, np.float64)
    side = digit_px * 28 // 20
    left = (size - side * len(digits)) // 2
    for digit in digits:
        big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
        opacity = np.asarray(big, np.float64)[..., np.newaxis] / 255.0
        top = (size - side) // 2
        window = rgb[top : top + side, left : left + side]
        window[:] = window * (1 - opacity) + np.asarray(ink, np.float64) * opacity
        left += side
    photo = Image.fromarray(rgb.astype(np.uint8)).rotate(
        turn, Image.Resampling.BICUBIC, fillcolor=(228, 226, 218)
    )
    rgb = np.asarray(photo, np.float64)
    if desk is not None:  # the sheet's corner: desk on the left and at the top
        shown = np.zeros((size, size), bool)
        shown[:, :50] = True
        shown[:35, :] = True
        rgb[shown] = desk + rng.normal(0, 2, (int(shown.sum()), 1))
    columns = np.arange(size, dtype=np.float64) / (size - 1)
    rgb *= (1 - falloff * columns)[np.newaxis, :, np.newaxis]
    photo = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1.0)
    )
    noisy = np.asarray(photo, np.float64) + rng.normal(0, 4, (size, size, 3))
    return encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", quality=80)


PHOTOS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "even light": lambda d, i: phone_photo([d], i),
    "light falling off by 45 %": lambda d, i: phone_photo([d], i, falloff=0.45),
    "lighter desk": lambda d, i: phone_photo([d], i, desk=250),
    "darker desk": lambda d, i: phone_photo([d], i, desk=70),
    "darker desk, uneven light": lambda d, i: phone_photo([d], i, desk=90, falloff=0.4),
    "lined paper": lambda d, i: phone_photo([d], i, ruling="lined"),
    "squared paper, blue ink": lambda d, i: phone_photo(
        [d], i, ruling="squared", ink=(30, 50, 150)
    ),
}


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_a_phone_photo_gives_the_digit(photo: str) -> None:
    # the old preprocessing (one global threshold against the border's grey) read none of the
    # desk or uneven-light photos: the desk or the darker side of the sheet became the "digit"
    for seed, (name, digit) in enumerate(DIGITS):
        pixels = preprocess(PHOTOS[photo](digit, seed))
        assert_mnist_placement(pixels, name)
        # measured: 0.86 at worst (a 0 on lined paper: a ruled line crosses its loop)
        assert shape_match(pixels, digit) > 0.8, (name, shape_match(pixels, digit))


@pytest.mark.parametrize("desk", [None, 60.0, 250.0], ids=["paper", "darker desk", "lighter desk"])
def test_a_photo_of_blank_paper_raises_blank_image_error(desk: float | None) -> None:
    blank = np.zeros((28, 28), np.uint8)
    with pytest.raises(BlankImageError, match="no digit") as raised:
        preprocess(phone_photo([blank], 0, desk=desk, falloff=0.4))
    assert not isinstance(raised.value, SeveralDigitsError)


@pytest.mark.parametrize("count", [2, 3])
def test_several_digits_raise_several_digits_error(count: int) -> None:
    digits = [DIGITS[i][1] for i in (0, 1, 4)][:count]
    data = phone_photo(digits, count, digit_px=220 // count, falloff=0.3)
    with pytest.raises(
        SeveralDigitsError, match=f"several digits found \\({count} side by side\\)"
    ):
        preprocess(data)
    # the same on a clean white page
    page = np.hstack([255 - digit for digit in digits])
    with pytest.raises(SeveralDigitsError, match="upload a picture of one digit"):
        preprocess(png(np.pad(page, 10, constant_values=255)))


def test_two_ones_drawn_side_by_side_are_several_digits() -> None:
    """Slender marks fill their bounding box like a shadow does, yet are strokes: "11" is two
    digits, while one "1" is read."""
    page = np.full((280, 280), 255, np.uint8)
    page[56:224, 72:96] = 0
    one = page.copy()
    page[56:224, 184:208] = 0
    with pytest.raises(SeveralDigitsError, match="2 side by side"):
        preprocess(png(page))
    assert preprocess(png(one)).any()


def test_a_digit_in_two_strokes_is_one_digit() -> None:
    # a 4 whose two strokes do not touch, and a 5 whose top bar is apart: one digit each
    four = np.full((120, 100), 255, np.uint8)
    four[10:70, 20:28] = 0  # the left stroke, down
    four[62:70, 20:75] = 0  # the bar, stopping short of ...
    four[10:110, 80:88] = 0  # ... the right stroke
    assert bounding_box(preprocess(png(four))) == (20, 14)
    five = np.full((120, 100), 255, np.uint8)
    five[10:18, 35:85] = 0  # the bar, apart
    five[24:60, 25:33] = 0
    five[55:63, 25:75] = 0
    five[55:105, 70:78] = 0
    five[100:108, 25:75] = 0
    assert bounding_box(preprocess(png(five))) == (20, 12)


# --- end to end: the shipped model recognises uploads ---------------------------------------


@pytest.fixture(scope="module")
def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """The ten MNIST test digits of tests/fixtures/mnist, with their labels."""
    labels = [int(name.rsplit("label", 1)[1]) for name, _ in DIGITS]
    return np.stack([digit for _, digit in DIGITS]), np.array(labels)


def off_centre(digit: np.ndarray, index: int) -> bytes:
    rng = np.random.default_rng(index)
    top_left = (int(rng.integers(0, 60)), int(rng.integers(0, 160)))
    return png(255 - on_canvas(digit, scale=5, size=(300, 200), top_left=top_left))


UPLOADS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "white on black": lambda d, i: png(d),
    "black on white": lambda d, i: png(255 - d),
    "large canvas off-centre": off_centre,
    "rgb blue ink": lambda d, i: png(blend(d, WHITE, BLUE_INK)),
    "rgba on transparent": lambda d, i: rgba(d, BLACK),
    "jpeg": lambda d, i: encode(Image.fromarray(255 - d), "JPEG", quality=75),
    "photo of paper": lambda d, i: paper_photo(d, i),
    "phone photo, uneven light": lambda d, i: phone_photo([d], i, falloff=0.45),
    "phone photo, darker desk": lambda d, i: phone_photo([d], i, desk=70),
    "phone photo, lighter desk": lambda d, i: phone_photo([d], i, desk=250),
    "phone photo, lined paper": lambda d, i: phone_photo([d], i, ruling="lined"),
}


@pytest.mark.parametrize("variant", list(UPLOADS))
def test_uploaded_mnist_digits_are_recognised(
    shipped_server: str, mnist_test_digits: tuple[np.ndarray, np.ndarray], variant: str
) -> None:
    x, y = mnist_test_digits
    files = [
        ("file", (f"{variant}-{i}", UPLOADS[variant](digit, i), "application/octet-stream"))
        for i, digit in enumerate(x)
    ]
    predictions: list[dict[str, Any]] = []
    with httpx.Client(base_url=shipped_server, timeout=60) as client:
        for start in range(0, len(files), 16):
            response = client.post("/api/v1/digits", files=files[start : start + 16])
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["model"], body["version"]) == ("digits", shipped_version("digits"))
            predictions += body["predictions"]
    assert [p["file"] for p in predictions] == [name for _, (name, _, _) in files]
    wrong = {
        p["file"]: (p["digit"], int(label))
        for p, label in zip(predictions, y, strict=True)
        if p["digit"] != label
    }
    # Measured: 10/10 in every variant, and 997-999 of the first 1,000 test digits with
    # benchmarks/digits_upload_accuracy.py; one miss is allowed so that a digit at the edge of
    # the model's confidence cannot fail it.
    assert len(wrong) <= 1, wrong


@pytest.mark.parametrize(
    ("what", "make", "reason"),
    [
        ("blank", lambda: phone_photo([np.zeros((28, 28), np.uint8)], 0, desk=70), "no digit"),
        ("several", lambda: phone_photo([d for _, d in DIGITS[:3]], 1, digit_px=70), "several"),
    ],
)
def test_no_digit_or_several_digits_answer_400_with_the_reason(
    shipped_server: str, what: str, make: Callable[[], bytes], reason: str
) -> None:
    with httpx.Client(base_url=shipped_server, timeout=60) as client:
        response = client.post(
            "/api/v1/digits", files=[("file", (f"{what}.jpg", make(), "image/jpeg"))]
        )
    assert response.status_code == 400, response.text
    assert reason in response.text and f"{what}.jpg" in response.text, response.text
