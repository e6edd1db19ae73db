"""A seeded generator of phone-like photos of handwritten digits, from MNIST test digits.

Each photo is an 800x800 JPEG of a sheet of paper with one MNIST digit written on it, under one
named condition (CONDITIONS). Every photo carries the everyday defects of a phone photo (a
slight tilt, a little blur, sensor noise, JPEG at quality 75-92, paper that is not pure white);
each condition adds its own difficulty on top:

- `even`: paper fills the frame, even light, the digit 300 px tall in the middle;
- `uneven-light`: the light falls off by 40 % from one side to the other;
- `lighter-desk` / `darker-desk`: the sheet lies on a desk lighter / darker than the paper,
  the desk showing on one or more sides;
- `darker-desk-uneven`: both;
- `shadow`: a soft shadow (a hand or the phone) across part of the sheet, down to 45 % light;
- `rotation`: the sheet turned by up to +-15 degrees;
- `perspective`: the phone held at an angle (keystone up to 12 % and shear);
- `blur`: out of focus (Gaussian, radius 2-3.5 px) and a little motion;
- `noise`: a dim room: sensor noise of 8-14 grey levels, per channel;
- `jpeg`: heavy compression, quality 40-60;
- `blue-ink` / `pencil`: ballpoint blue; graphite (lighter, grainy strokes);
- `lined` / `squared`: ruled paper with a red margin line; 5 mm squared paper;
- `anywhere`: the digit anywhere on the sheet, 10-70 % of the sheet's size;
- `clutter`: a pen lying across the desk and the sheet (darker and larger than the digit),
  pencil dots and specks of dirt on the paper;
- `hard`: all of the above drawn at random, several at once.

The digit is MNIST's 28x28 test image scaled up (bicubic) and used as the ink's opacity, so the
strokes keep MNIST's shape: a wrong answer is the preprocessing's (or the model's) fault, not the
drawing's. Every photo is a function of (seed, condition, index): runs are repeatable.

    python benchmarks/digit_photos.py --contact-sheet docs/images/digit-photos.jpg
    python benchmarks/digit_photos.py --out /tmp/photos --count 20   # JPEG files to look at

MNIST is read from --data (Keras' mnist.npz, keys x_test and y_test), by default
../shared/data/mnist.npz beside the repository.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"
FRAME = 800
DIGIT_PX = 300  # the height of MNIST's 20x20 box in the photo (issue 25's measurements)


@dataclass
class Scene:
    """What one photo shows; the defaults are the `even` condition."""

    paper: tuple[float, float, float] = (232.0, 230.0, 224.0)
    desk: tuple[float, float, float] | None = None  # None: the paper fills the frame
    paper_box: tuple[float, float, float, float] = (-0.05, -0.05, 1.05, 1.05)  # l, t, r, b
    ink: tuple[float, float, float] = (28.0, 28.0, 36.0)
    pencil: bool = False
    ruling: str = ""  # "", "lined" or "squared"
    digit_px: float = DIGIT_PX
    digit_centre: tuple[float, float] = (0.5, 0.5)  # on the sheet, fractions of its size
    rotation: float = 0.0  # degrees
    keystone: tuple[float, float] = (0.0, 0.0)  # horizontal, vertical (fractions)
    shear: float = 0.0
    falloff: float = 0.0  # light lost from one side to the other
    falloff_angle: float = 0.0
    shadow: float = 0.0  # light lost in the shadow
    blur: float = 0.6
    motion: int = 0  # px of motion blur
    noise: float = 3.0
    quality: int = 85
    clutter: bool = False
    extra: list[str] = field(default_factory=list)


def base_scene(rng: np.random.Generator) -> Scene:
    """The everyday defects every photo has."""
    tint = rng.uniform(-6, 6, 3)
    level = rng.uniform(205, 240)
    return Scene(
        paper=tuple(float(v) for v in np.clip(level + tint, 0, 255)),  # type: ignore[arg-type]
        rotation=float(rng.uniform(-3, 3)),
        digit_centre=(float(rng.uniform(0.46, 0.54)), float(rng.uniform(0.46, 0.54))),
        digit_px=float(rng.uniform(0.9, 1.1) * DIGIT_PX),
        blur=float(rng.uniform(0.4, 1.2)),
        noise=float(rng.uniform(2, 5)),
        quality=int(rng.integers(75, 93)),
        ink=tuple(float(v) for v in rng.uniform(15, 50, 3)),  # type: ignore[arg-type]
    )


def desk_box(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """The sheet's box in the frame with the desk showing on 1-4 sides (5-20 % of the frame)."""
    sides = rng.permutation(4)[: int(rng.integers(1, 5))]
    box = [-0.05, -0.05, 1.05, 1.05]
    for side in sides:
        margin = float(rng.uniform(0.05, 0.2))
        box[side] = margin if side < 2 else 1 - margin
    return box[0], box[1], box[2], box[3]


def lighter_desk(scene: Scene, rng: np.random.Generator) -> None:
    scene.paper = tuple(v - rng.uniform(20, 35) for v in scene.paper)  # type: ignore[assignment]
    scene.desk = tuple(float(v) for v in rng.uniform(238, 252, 3))  # type: ignore[assignment]
    scene.paper_box = desk_box(rng)


def darker_desk(scene: Scene, rng: np.random.Generator) -> None:
    wood = np.array([rng.uniform(90, 150), rng.uniform(60, 110), rng.uniform(35, 80)])
    grey = np.full(3, rng.uniform(30, 120))
    scene.desk = tuple(float(v) for v in (wood if rng.random() < 0.5 else grey))  # type: ignore[assignment]
    scene.paper_box = desk_box(rng)


def uneven_light(scene: Scene, rng: np.random.Generator) -> None:
    scene.falloff = float(rng.uniform(0.4, 0.5))
    scene.falloff_angle = float(rng.uniform(0, 2 * math.pi))


def shadow(scene: Scene, rng: np.random.Generator) -> None:
    scene.shadow = float(rng.uniform(0.35, 0.55))


def rotation(scene: Scene, rng: np.random.Generator) -> None:
    scene.rotation = float(rng.uniform(-15, 15))


def perspective(scene: Scene, rng: np.random.Generator) -> None:
    scene.keystone = (float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12)))
    scene.shear = float(rng.uniform(-0.12, 0.12))


def blur(scene: Scene, rng: np.random.Generator) -> None:
    scene.blur = float(rng.uniform(2.0, 3.5))
    scene.motion = int(rng.integers(0, 8))


def noise(scene: Scene, rng: np.random.Generator) -> None:
    scene.noise = float(rng.uniform(8, 14))


def jpeg(scene: Scene, rng: np.random.Generator) -> None:
    scene.quality = int(rng.integers(40, 61))


def blue_ink(scene: Scene, rng: np.random.Generator) -> None:
    scene.ink = (
        float(rng.uniform(20, 50)),
        float(rng.uniform(35, 70)),
        float(rng.uniform(120, 170)),
    )


def pencil(scene: Scene, rng: np.random.Generator) -> None:
    grey = float(rng.uniform(95, 135))
    scene.ink = (grey, grey, grey + 5)
    scene.pencil = True


def lined(scene: Scene, rng: np.random.Generator) -> None:
    scene.ruling = "lined"


def squared(scene: Scene, rng: np.random.Generator) -> None:
    scene.ruling = "squared"


def anywhere(scene: Scene, rng: np.random.Generator) -> None:
    fraction = float(rng.uniform(0.1, 0.7))  # of the sheet's size
    scene.digit_px = fraction * FRAME * 20 / 28  # MNIST's digit is 20 of its 28 pixels
    half = fraction / 2 + 0.04
    scene.digit_centre = (float(rng.uniform(half, 1 - half)), float(rng.uniform(half, 1 - half)))


def clutter(scene: Scene, rng: np.random.Generator) -> None:
    scene.clutter = True
    if scene.desk is None:
        darker_desk(scene, rng)


Condition = Callable[[Scene, np.random.Generator], None]
SINGLE: dict[str, list[Condition]] = {
    "even": [],
    "uneven-light": [uneven_light],
    "lighter-desk": [lighter_desk],
    "darker-desk": [darker_desk],
    "darker-desk-uneven": [darker_desk, uneven_light],
    "shadow": [shadow],
    "rotation": [rotation],
    "perspective": [perspective],
    "blur": [blur],
    "noise": [noise],
    "jpeg": [jpeg],
    "blue-ink": [blue_ink],
    "pencil": [pencil],
    "lined": [lined],
    "squared": [squared],
    "anywhere": [anywhere],
    "clutter": [clutter],
}
CONDITIONS = [*SINGLE, "hard"]


def scene_for(condition: str, rng: np.random.Generator) -> Scene:
    scene = base_scene(rng)
    if condition == "hard":
        pool = [
            [uneven_light],
            [lighter_desk],
            [darker_desk],
            [shadow],
            [rotation],
            [perspective],
            [blur],
            [noise],
            [jpeg],
            [blue_ink],
            [pencil],
            [lined],
            [squared],
            [anywhere],
            [clutter],
        ]
        picked = [pool[i] for i in rng.permutation(len(pool))[: int(rng.integers(2, 5))]]
        steps = [step for group in picked for step in group]
        if lighter_desk in steps and darker_desk in steps:
            steps.remove(lighter_desk)
        if lined in steps and squared in steps:
            steps.remove(squared)
        if pencil in steps and blue_ink in steps:
            steps.remove(blue_ink)
    else:
        steps = SINGLE[condition]
    for step in steps:
        step(scene, rng)
    scene.extra = [step.__name__ for step in steps]
    return scene


# --- rendering ------------------------------------------------------------------------------


def sheet_ink(digit: np.ndarray, scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """float [size, size] 0..1: the ink's opacity on the (unrotated) sheet."""
    side = max(8, round(scene.digit_px * 28 / 20))
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    opacity = np.asarray(big, np.float32) / 255.0
    if scene.pencil:  # graphite: grainy, lighter where the pen pressed less
        grain = rng.uniform(0.45, 1.0, opacity.shape).astype(np.float32)
        smooth = Image.fromarray((grain * 255).astype(np.uint8)).filter(ImageFilter.BoxBlur(1))
        opacity = opacity * np.asarray(smooth, np.float32) / 255.0
    canvas = np.zeros((size, size), np.float32)
    cx, cy = scene.digit_centre
    left, top = round(cx * size - side / 2), round(cy * size - side / 2)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + side, size), min(left + side, size)
    canvas[t0:t1, l0:l1] = opacity[t0 - top : t1 - top, l0 - left : l1 - left]
    return np.clip(canvas, 0, 1)


def ruling(scene: Scene, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(opacity [size, size], colour [size, size, 3]) of the printed lines."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    if scene.ruling == "lined":
        spacing = float(rng.uniform(26, 36))  # 7-9 mm on A4 at this scale
        colour = (
            int(rng.uniform(120, 160)),
            int(rng.uniform(160, 190)),
            int(rng.uniform(210, 235)),
        )
        width = int(rng.integers(1, 3))
        y = float(rng.uniform(0, spacing))
        while y < size:
            draw.line([(0, y), (size, y)], fill=colour, width=width)
            draw_mask.line([(0, y), (size, y)], fill=int(rng.uniform(150, 220)), width=width)
            y += spacing
        margin = size * float(rng.uniform(0.08, 0.12))
        draw.line([(margin, 0), (margin, size)], fill=(215, 80, 90), width=2)
        draw_mask.line([(margin, 0), (margin, size)], fill=200, width=2)
    else:
        spacing = float(rng.uniform(18, 24))  # 5 mm
        colour = (
            int(rng.uniform(120, 170)),
            int(rng.uniform(150, 185)),
            int(rng.uniform(180, 220)),
        )
        offset = float(rng.uniform(0, spacing))
        position = offset
        while position < size:
            for line in ([(0, position), (size, position)], [(position, 0), (position, size)]):
                draw.line(line, fill=colour, width=1)
                draw_mask.line(line, fill=int(rng.uniform(120, 180)), width=1)
            position += spacing
    return np.asarray(mask, np.float32) / 255.0, np.asarray(image, np.float32)


def sheet(digit: np.ndarray, scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """RGB of the flat sheet: paper, ruling, ink."""
    rgb = np.empty((size, size, 3), np.float32)
    rgb[:] = scene.paper
    rgb += rng.normal(0, 1.5, (size, size, 1)).astype(np.float32)  # paper texture
    if scene.ruling:
        opacity, colour = ruling(scene, size, rng)
        rgb = rgb * (1 - opacity[..., None]) + colour * opacity[..., None]
    ink = sheet_ink(digit, scene, size, rng)[..., None]
    rgb = rgb * (1 - ink) + np.asarray(scene.ink, np.float32) * ink
    if scene.clutter:  # pencil dots and specks of dirt, away from the digit
        marks = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(marks)
        half = scene.digit_px * 0.75
        cx, cy = scene.digit_centre[0] * size, scene.digit_centre[1] * size
        for _ in range(int(rng.integers(3, 9))):
            x, y = rng.uniform(0.05, 0.95, 2) * size
            if abs(x - cx) < half and abs(y - cy) < half:
                continue
            r = float(rng.uniform(1.5, 5))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(120, 230)))
        dots = np.asarray(marks, np.float32)[..., None] / 255.0
        rgb = rgb * (1 - dots) + np.float32(60) * dots
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def corners(scene: Scene) -> np.ndarray:
    """The sheet's four corners (tl, tr, br, bl) in the frame, in pixels."""
    left, top, right, bottom = scene.paper_box
    cx, cy = (left + right) / 2 * FRAME, (top + bottom) / 2 * FRAME
    w, h = (right - left) * FRAME, (bottom - top) * FRAME
    kx, ky = scene.keystone
    points = np.array(
        [
            [-w / 2 * (1 - kx), -h / 2 * (1 - ky)],
            [w / 2 * (1 - kx), -h / 2 * (1 + ky)],
            [w / 2 * (1 + kx), h / 2 * (1 + ky)],
            [-w / 2 * (1 + kx), h / 2 * (1 - ky)],
        ]
    )
    points[:, 0] += scene.shear * points[:, 1]
    angle = math.radians(scene.rotation)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # a sheet that filled the frame still does when turned: scale it up to cover the corners
    if scene.desk is None:
        cover = (
            abs(math.cos(angle)) + abs(math.sin(angle)) + abs(scene.shear) + max(map(abs, (kx, ky)))
        )
        points *= cover
    return np.asarray(points @ turn.T + [cx, cy])


def perspective_coefficients(source: np.ndarray, target: np.ndarray) -> list[float]:
    """Pillow's PERSPECTIVE data mapping output (frame) pixels `target` to input `source`."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.asarray(rows, float), source.reshape(8))
    return [float(c) for c in solution]


def lighting(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """float [FRAME, FRAME]: the light falling on each pixel (1 = full)."""
    rows, cols = np.indices((FRAME, FRAME), dtype=np.float32) / FRAME
    light = np.ones((FRAME, FRAME), np.float32) * float(rng.uniform(0.97, 1.0))
    if scene.falloff:
        dx, dy = math.cos(scene.falloff_angle), math.sin(scene.falloff_angle)
        along = (cols - 0.5) * dx + (rows - 0.5) * dy
        along = (along - along.min()) / (along.max() - along.min())
        light *= 1 - scene.falloff * along
    if scene.shadow:
        # a soft-edged half-plane through a point near the digit, at a random angle
        angle = float(rng.uniform(0, 2 * math.pi))
        px, py = rng.uniform(0.3, 0.7, 2)
        distance = (cols - px) * math.cos(angle) + (rows - py) * math.sin(angle)
        softness = float(rng.uniform(0.02, 0.08))
        inside = 1 / (1 + np.exp(-distance / softness))
        light *= 1 - scene.shadow * inside
    return light


def render(digit: np.ndarray, condition: str, seed: int) -> tuple[bytes, Scene]:
    """The JPEG of one photo and the scene it shows."""
    rng = np.random.default_rng(seed)
    scene = scene_for(condition, rng)
    size = FRAME
    flat = sheet(digit, scene, size, rng)
    target = corners(scene)
    source = np.array([[0, 0], [size, 0], [size, size], [0, size]], float)
    coefficients = perspective_coefficients(source, target)
    warped = flat.transform(
        (FRAME, FRAME), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC
    )
    inside = Image.new("L", flat.size, 255).transform(
        (FRAME, FRAME), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    rgb = np.asarray(warped, np.float32)
    if scene.desk is not None:
        desk = np.empty_like(rgb)
        desk[:] = scene.desk
        rows, cols = np.indices((FRAME, FRAME), dtype=np.float32) / FRAME
        desk *= (1 + 0.06 * np.sin(cols * rng.uniform(3, 9) + rows * rng.uniform(0, 3)))[..., None]
        desk += rng.normal(0, 2.5, (FRAME, FRAME, 1)).astype(np.float32)
        alpha = (np.asarray(inside, np.float32) / 255.0)[..., None]
        rgb = rgb * alpha + desk * (1 - alpha)
    if scene.clutter:  # a pen from the desk onto the sheet, off the digit
        pen = Image.new("L", (FRAME, FRAME), 0)
        draw = ImageDraw.Draw(pen)
        x0, y0, x1, y1 = scene.paper_box  # the digit's centre in the frame, roughly
        digit_x = (x0 + (x1 - x0) * scene.digit_centre[0]) * FRAME
        digit_y = (y0 + (y1 - y0) * scene.digit_centre[1]) * FRAME
        for _ in range(50):  # a pen that stays clear of the digit
            side = int(rng.integers(0, 4))
            start = float(rng.uniform(0.1, 0.9)) * FRAME
            length, angle = float(rng.uniform(250, 400)), float(rng.uniform(-0.5, 0.5))
            begin = [(start, 0.0), (FRAME, start), (start, FRAME), (0.0, start)][side]
            inward = [math.pi / 2, math.pi, -math.pi / 2, 0.0][side] + angle
            end = (begin[0] + length * math.cos(inward), begin[1] + length * math.sin(inward))
            along = np.linspace(0, 1, 50)[:, None]
            points = np.asarray(begin) * (1 - along) + np.asarray(end) * along
            if np.hypot(points[:, 0] - digit_x, points[:, 1] - digit_y).min() > scene.digit_px:
                break
        draw.line([begin, end], fill=255, width=int(rng.integers(18, 30)))
        body = np.asarray(pen, np.float32)[..., None] / 255.0
        colour = np.asarray(rng.uniform(10, 60, 3), np.float32)
        rgb = rgb * (1 - body) + colour * body
    rgb *= lighting(scene, rng)[..., None]
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if scene.motion:  # the phone moved: the average of shifted copies along one direction
        angle = rng.uniform(0, math.pi)
        pixels = np.asarray(image, np.float32)
        moved = np.zeros_like(pixels)
        for step in range(scene.motion):
            dy, dx = round(step * math.sin(angle)), round(step * math.cos(angle))
            moved += np.roll(pixels, (dy, dx), (0, 1))
        image = Image.fromarray(np.clip(moved / scene.motion, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(scene.blur))
    noisy = np.asarray(image, np.float32) + rng.normal(0, scene.noise, (FRAME, FRAME, 3))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=scene.quality)
    return buffer.getvalue(), scene


def photo_seed(seed: int, condition: str, index: int) -> int:
    return seed * 1_000_003 + CONDITIONS.index(condition) * 10_007 + index


# --- MNIST, files and the contact sheet ----------------------------------------------------


def load_mnist(path: Path | None, count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    data = path or DEFAULT_DATA
    if not data.is_file():
        sys.exit(
            f"MNIST not found at {data}: pass --data PATH to mnist.npz (Keras' layout, keys "
            "x_test and y_test), or put it in ../shared/data beside the repository."
        )
    with np.load(data) as npz:
        x = npz["x_test"][offset : offset + count]
        y = npz["y_test"][offset : offset + count].astype(int)
    if len(x) < count:
        sys.exit(f"{data} has only {len(x) + offset} test images (asked for {offset + count})")
    return x, y


def contact_sheet(x: np.ndarray, conditions: list[str], per_row: int, seed: int) -> Image.Image:
    """A grid: one row per condition, `per_row` photos (the benchmark's first ones for that
    condition), each shown at 150x150."""
    tile, gap, label = 150, 4, 190
    grid = Image.new(
        "RGB", (label + per_row * (tile + gap), len(conditions) * (tile + gap)), "white"
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=18)
    for r, condition in enumerate(conditions):
        draw.text((8, r * (tile + gap) + tile // 2 - 10), condition, fill=(0, 0, 0), font=font)
        for c in range(per_row):
            data, _ = render(x[c], condition, photo_seed(seed, condition, c))
            photo = Image.open(io.BytesIO(data)).convert("RGB")
            photo = photo.resize((tile, tile), Image.Resampling.LANCZOS)
            grid.paste(photo, (label + c * (tile + gap), r * (tile + gap)))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help=f"MNIST's mnist.npz (default: {DEFAULT_DATA})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offset", type=int, default=0, help="first MNIST test image used")
    parser.add_argument("--condition", nargs="+", choices=CONDITIONS, default=CONDITIONS)
    parser.add_argument(
        "--contact-sheet", type=Path, help="write a grid of photos (PNG, or JPEG if .jpg)"
    )
    parser.add_argument("--per-row", type=int, default=5, help="photos per condition (sheet)")
    parser.add_argument("--out", type=Path, help="write the photos as JPEG files here")
    parser.add_argument("--count", type=int, default=10, help="photos per condition (--out)")
    args = parser.parse_args()
    if not args.contact_sheet and not args.out:
        parser.error("nothing to do: give --contact-sheet PATH and/or --out DIR")
    x, y = load_mnist(args.data, max(args.count, args.per_row * len(args.condition)), args.offset)
    if args.contact_sheet:
        grid = contact_sheet(x, args.condition, args.per_row, args.seed)
        jpeg = args.contact_sheet.suffix.lower() in (".jpg", ".jpeg")
        grid.save(args.contact_sheet, optimize=True, **({"quality": 85} if jpeg else {}))
        print(f"wrote {args.contact_sheet}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for condition in args.condition:
            for index in range(args.count):
                data, _ = render(x[index], condition, photo_seed(args.seed, condition, index))
                (args.out / f"{condition}-{index:03d}-label{y[index]}.jpg").write_bytes(data)
        print(f"wrote {args.count * len(args.condition)} photos to {args.out}")


if __name__ == "__main__":
    main()
