"""Accuracy of the digits task on phone-like photos, per condition (issue 25).

Renders MNIST test digits as photos with benchmarks/digit_photos.py (`--count` per condition,
seeded), converts each with the gateway's own preprocessing (`service.tasks.mnist_format`, after
the gateway's decoder) and asks the `digits` model, in-process (no server needed); with `--url`
the photos are uploaded to `POST /api/v1/digits` of a running gateway instead. Also measured:
clean pictures (MNIST's 28x28 arrays as PNG, white on black and black on white; drawings as the
web page's canvas sends them: black strokes on a white 280x280 PNG) and the preprocessing time
per photo. A photo the preprocessing refuses (no digit / several digits) counts as wrong and is
also reported in the `refused` column.

    python benchmarks/digit_photos_accuracy.py --count 60 \\
        --markdown benchmarks/results/digit_photos_accuracy.md

MNIST is read from --data (Keras' mnist.npz), by default ../shared/data/mnist.npz beside the
repository; the model from --models (default: the newest version in the repository's
models/digits).
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from digit_photos import CONDITIONS, DEFAULT_DATA, load_mnist, photo_seed, render

from service.tasks.mnist_format import BlankImageError, mnist_pixels
from service.tasks.uploads import Upload, open_image

ROOT = Path(__file__).resolve().parent.parent
MAX_PIXELS = 40_000_000


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def canvas_drawing(digit: np.ndarray) -> bytes:
    """As the web page sends a drawing: black strokes (anti-aliased) on a white 280x280 PNG,
    the digit drawn large (MNIST's 28x28 scaled by 10, strokes 20-30 px wide)."""
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    ink = np.clip((np.asarray(big, np.float32) - 60) * 2.5, 0, 255)
    return png((255 - ink).astype(np.uint8))


CLEAN: dict[str, Callable[[np.ndarray], bytes]] = {
    "clean: mnist white on black": png,
    "clean: mnist black on white": lambda d: png(255 - d),
    "clean: canvas drawing": canvas_drawing,
}


def newest_version(base: Path) -> Path:
    versions = [p for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    if not versions:
        sys.exit(f"no model versions in {base}: pass --models PATH/TO/digits/N")
    return max(versions, key=lambda p: int(p.name))


class Model:
    def __init__(self, path: Path) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf

        self._tf = tf
        self._signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def digits(self, pixels: np.ndarray) -> np.ndarray:
        batch = (pixels.astype(np.float32) / 255.0)[..., np.newaxis]
        out = self._signature(image=self._tf.constant(batch))["probabilities"].numpy()
        predicted: np.ndarray = out.argmax(axis=1)
        return predicted


def preprocess(data: bytes) -> tuple[np.ndarray | None, float, str]:
    """(28x28 pixels or None if refused, seconds in mnist_pixels, refusal reason)."""
    image = open_image(Upload("photo", "", data), max_pixels=MAX_PIXELS)
    start = time.perf_counter()
    try:
        pixels = mnist_pixels(image)
        return pixels, time.perf_counter() - start, ""
    except BlankImageError as exc:
        return None, time.perf_counter() - start, str(exc)


def run_in_process(
    model: Model, files: list[bytes], labels: np.ndarray
) -> tuple[int, int, list[float], list[str]]:
    """(correct, refused, seconds per picture, refusal reasons)."""
    rows, kept, seconds, reasons = [], [], [], []
    for index, data in enumerate(files):
        pixels, took, reason = preprocess(data)
        seconds.append(took)
        if pixels is None:
            reasons.append(reason)
        else:
            rows.append(pixels)
            kept.append(index)
    correct = 0
    if rows:
        predicted = model.digits(np.stack(rows))
        correct = int((predicted == labels[kept]).sum())
    return correct, len(files) - len(rows), seconds, reasons


def run_over_http(url: str, files: list[bytes], labels: np.ndarray) -> tuple[int, int]:
    import httpx

    correct = refused = 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for index, data in enumerate(files):
            response = client.post(
                "/api/v1/digits", files=[("file", (f"photo-{index}.jpg", data, "image/jpeg"))]
            )
            if response.status_code != 200:
                refused += 1
                continue
            correct += int(response.json()["predictions"][0]["digit"]) == int(labels[index])
    return correct, refused


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help=f"MNIST's mnist.npz (default: {DEFAULT_DATA})")
    parser.add_argument("--count", type=int, default=60, help="photos per condition")
    parser.add_argument("--clean-count", type=int, default=1000, help="clean pictures per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offset", type=int, default=0, help="first MNIST test image used")
    parser.add_argument("--condition", nargs="+", choices=CONDITIONS, default=CONDITIONS)
    parser.add_argument(
        "--models",
        type=Path,
        help="the digits model's version directory (default: the newest in models/digits)",
    )
    parser.add_argument("--url", help="upload to this running gateway instead of in-process")
    parser.add_argument("--markdown", type=Path, help="write the table and the command")
    args = parser.parse_args()
    x, y = load_mnist(args.data, max(args.count, args.clean_count), args.offset)
    model = None if args.url else Model(args.models or newest_version(ROOT / "models" / "digits"))
    lines = [
        "| condition | pictures | correct | accuracy | refused | preprocessing ms (median / p95) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    all_seconds: list[float] = []
    totals = [0, 0]
    kinds: list[tuple[str, list[bytes], np.ndarray]] = []
    for condition in args.condition:
        files = [
            render(x[i], condition, photo_seed(args.seed, condition, i))[0]
            for i in range(args.count)
        ]
        kinds.append((condition, files, y[: args.count]))
    for name, make in CLEAN.items():
        kinds.append((name, [make(d) for d in x[: args.clean_count]], y[: args.clean_count]))
    for name, files, labels in kinds:
        if model is None:
            correct, refused = run_over_http(args.url, files, labels)
            timing = "-"
            refused_cell = str(refused)
        else:
            correct, refused, seconds, reasons = run_in_process(model, files, labels)
            several = sum(reason.startswith("several") for reason in reasons)
            refused_cell = f"{refused} ({several} as several digits)" if several else str(refused)
            timing = f"{1000 * np.median(seconds):.1f} / {1000 * np.percentile(seconds, 95):.1f}"
            if not name.startswith("clean"):
                all_seconds += seconds
        if not name.startswith("clean"):
            totals[0] += correct
            totals[1] += len(files)
        line = (
            f"| {name} | {len(files)} | {correct} | {correct / len(files):.1%} | {refused_cell} | "
            f"{timing} |"
        )
        lines.append(line)
        print(line, flush=True)
    if totals[1]:
        timing = (
            f"{1000 * np.median(all_seconds):.1f} / {1000 * np.percentile(all_seconds, 95):.1f}"
            if all_seconds
            else "-"
        )
        lines.append(
            f"| **all photos** | {totals[1]} | {totals[0]} | **{totals[0] / totals[1]:.1%}** "
            f"| | {timing} |"
        )
        print(lines[-1])
    command = shlex.join(["python", "benchmarks/digit_photos_accuracy.py", *sys.argv[1:]])
    text = "\n".join([*lines, "", "Command:", "", "```", command, "```", ""])
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
