"""How well the digits task API recognises MNIST digits uploaded as image files.

Uploads the first N MNIST test images as files to `POST /api/v1/digits` of a running gateway,
`--batch` files per request, drawn as one or more variants:

- `black-on-white`: a 28x28 PNG, dark ink on white paper (the default: how people draw);
- `white-on-black`: a 28x28 PNG exactly as MNIST stores it;
- `photo-like`: a JPEG (quality 85) of grey paper (180-230) with grain (Gaussian, 5 grey
  levels), uneven light and dark ink, the digit scaled up 4-6x and placed off-centre on a
  320x240 canvas (seeded by the image's index: every run draws the same pictures).

The gateway converts each picture to MNIST's format (service/tasks/mnist_format.py) and the
model answers. As the reference, the same model (models/digits/<version the server reports>)
is called in-process on the raw MNIST arrays; the difference is what the upload path costs.
Prints, per variant: images, correct, accuracy, the reference and the difference, requests,
wall time and images/s, and the errors by true digit (a confusion summary).

Run from the repository root, with a server running (models/ served on port 8501):

    modelserve serve &
    python benchmarks/digits_upload_accuracy.py --variant black-on-white white-on-black \\
        photo-like --markdown benchmarks/results/digits_upload_accuracy.md \\
        --json benchmarks/results/digits_upload_accuracy.json \\
        --plot benchmarks/results/digits_upload_confusion.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from digit_photos import DEFAULT_DATA, load_mnist  # benchmarks/ is on sys.path
from PIL import Image
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "/api/v1/digits"


# --- the pictures ---------------------------------------------------------------------------


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def black_on_white(digit: np.ndarray, index: int) -> bytes:
    return encode(Image.fromarray(255 - digit), "PNG")


def white_on_black(digit: np.ndarray, index: int) -> bytes:
    return encode(Image.fromarray(digit), "PNG")


def photo_like(digit: np.ndarray, index: int) -> bytes:
    """Dark ink on grey, grainy, unevenly lit paper; scaled up and off-centre; JPEG."""
    rng = np.random.default_rng(index)
    width, height = 320, 240
    side = 28 * int(rng.integers(4, 7))
    scaled = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.zeros((height, width))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    ink[top : top + side, left : left + side] = np.asarray(scaled) / 255.0
    paper, dark = rng.uniform(180, 230), rng.uniform(20, 70)
    rows, cols = np.indices(ink.shape)
    light = rng.uniform(-10, 10) * (cols / width - 0.5) + rng.uniform(-10, 10) * (
        rows / height - 0.5
    )
    grey = paper + light - (paper - dark) * ink + rng.normal(0.0, 5.0, ink.shape)
    picture = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    return encode(picture, "JPEG", quality=85)


VARIANTS: dict[str, tuple[Callable[[np.ndarray, int], bytes], str]] = {
    "black-on-white": (black_on_white, "png"),
    "white-on-black": (white_on_black, "png"),
    "photo-like": (photo_like, "jpg"),
}


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Result:
    variant: str
    images: int
    correct: int
    requests: int
    failed_requests: int
    wall_seconds: float
    reference_correct: int
    confusion: list[list[int]]  # [true digit][predicted digit]; failed uploads not counted
    failures: list[str] = field(default_factory=list)  # error messages of failed requests

    @property
    def accuracy(self) -> float:
        return self.correct / self.images

    @property
    def reference_accuracy(self) -> float:
        return self.reference_correct / self.images

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_seconds

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "difference_points": 100 * (self.accuracy - self.reference_accuracy),
            "images_per_second": self.images_per_second,
            "errors_by_digit": errors_by_digit(self.confusion),
        }


def check_server(client: httpx.Client) -> None:
    try:
        response = client.get("/readyz")
    except httpx.TransportError as exc:
        sys.exit(
            f"no gateway at {client.base_url} ({exc}); start one first: modelserve serve "
            "[--port 8501]"
        )
    if response.status_code != 200:
        sys.exit(f"the gateway at {client.base_url} is not ready: {response.text}")


def upload(
    client: httpx.Client, variant: str, x: np.ndarray, y: np.ndarray, batch: int
) -> tuple[Result, int]:
    """Upload every image; returns the result (reference not yet filled in) and the model
    version that answered."""
    make, extension = VARIANTS[variant]
    files = [(f"mnist-{i:05d}.{extension}", make(digit, i)) for i, digit in enumerate(x)]
    confusion = np.zeros((10, 10), dtype=int)
    correct = requests = failed = 0
    failures: list[str] = []
    versions: set[int] = set()
    start = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"{variant}: uploading", total=len(files))
        for first in range(0, len(files), batch):
            chunk = files[first : first + batch]
            parts = [("file", (name, data, "application/octet-stream")) for name, data in chunk]
            response = client.post(ENDPOINT, files=parts)
            requests += 1
            if response.status_code != 200:
                failed += 1
                failures.append(f"{chunk[0][0]}..: {response.status_code} {response.text[:200]}")
            else:
                body = response.json()
                versions.add(int(body["version"]))
                for offset, prediction in enumerate(body["predictions"]):
                    truth, digit = int(y[first + offset]), int(prediction["digit"])
                    confusion[truth, digit] += 1
                    correct += digit == truth
            progress.advance(task, len(chunk))
    wall = time.perf_counter() - start
    if len(versions) != 1:
        sys.exit(f"{variant}: expected answers from one model version, got {sorted(versions)}")
    result = Result(
        variant, len(files), correct, requests, failed, wall, 0, confusion.tolist(), failures
    )
    return result, versions.pop()


def reference_predictions(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """The model's digits for the raw MNIST arrays, called in-process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    if not model_dir.is_dir():
        sys.exit(f"no model at {model_dir} for the in-process reference (see --models)")
    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    batches = []
    for first in range(0, len(x), 500):
        images = (x[first : first + 500].astype(np.float32) / 255.0)[..., np.newaxis]
        batches.append(signature(image=tf.constant(images))["probabilities"].numpy())
    predicted: np.ndarray = np.concatenate(batches).argmax(axis=1)
    return predicted


# --- reporting ------------------------------------------------------------------------------


def errors_by_digit(confusion: list[list[int]]) -> dict[str, dict[str, Any]]:
    """Per true digit: how many, how many wrong, and what they were taken for."""
    summary = {}
    for truth, row in enumerate(confusion):
        mistaken = {str(d): n for d, n in enumerate(row) if d != truth and n}
        summary[str(truth)] = {"images": sum(row), "wrong": sum(mistaken.values()), "as": mistaken}
    return summary


def summary_table(results: list[Result]) -> str:
    names = [r.variant for r in results]
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("images", lambda r: f"{r.images:,}"),
        ("correct", lambda r: f"{r.correct:,}"),
        ("accuracy", lambda r: f"{r.accuracy:.2%}"),
        ("in-process reference (raw arrays)", lambda r: f"{r.reference_accuracy:.2%}"),
        ("difference (points)", lambda r: f"{100 * (r.accuracy - r.reference_accuracy):+.2f}"),
        ("requests (failed)", lambda r: f"{r.requests} ({r.failed_requests})"),
        ("wall time", lambda r: f"{r.wall_seconds:.1f} s"),
        ("images/s", lambda r: f"{r.images_per_second:,.0f}"),
    ]
    lines = [
        "| | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
        *(f"| {label} | " + " | ".join(cell(r) for r in results) + " |" for label, cell in rows),
    ]
    return "\n".join(lines)


def errors_table(results: list[Result]) -> str:
    """Per true digit and variant: wrong/images and the digits they were taken for."""
    lines = [
        "| true digit | " + " | ".join(r.variant for r in results) + " |",
        "| ---: |" + " --- |" * len(results),
    ]
    summaries = [errors_by_digit(r.confusion) for r in results]
    for digit in map(str, range(10)):
        cells = []
        for summary in summaries:
            entry = summary[digit]
            taken = ", ".join(
                f"{d}x{n}" for d, n in sorted(entry["as"].items(), key=lambda kv: -kv[1])
            )
            cells.append(
                f"{entry['wrong']}/{entry['images']}" + (f" (as {taken})" if taken else "")
            )
        lines.append(f"| {digit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[Result], model: str, command: str) -> str:
    failures = [f"- {r.variant}: {message}" for r in results for message in r.failures[:5]]
    parts = [
        f"## Digit uploads to {ENDPOINT} ({model})",
        "",
        summary_table(results),
        "",
        "Errors by true digit (wrong/images; `as 9x2`: taken for a 9 twice):",
        "",
        errors_table(results),
    ]
    if failures:
        parts += ["", "Failed requests (first 5 per variant):", "", *failures]
    parts += ["", "Command:", "", "```", command, "```"]
    return "\n".join(parts) + "\n"


def plot(results: list[Result], model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.4), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        matrix = np.asarray(result.confusion)
        errors = matrix - np.diag(np.diag(matrix))
        ax.imshow(np.log1p(errors), cmap="Reds", vmin=0, vmax=np.log1p(max(errors.max(), 4)))
        for (truth, predicted), n in np.ndenumerate(matrix):
            if n:
                bold = truth == predicted
                ax.text(
                    predicted,
                    truth,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="grey" if bold else "black",
                    weight="normal" if bold else "bold",
                )
        ax.set(
            xticks=range(10),
            yticks=range(10),
            xlabel="predicted",
            ylabel="true digit",
            title=f"{result.variant}: {result.accuracy:.2%}\n"
            f"(in-process on raw arrays: {result.reference_accuracy:.2%})",
        )
    fig.suptitle(f"{model}: confusion of {results[0].images:,} uploaded MNIST test digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the running gateway")
    parser.add_argument("--count", type=int, default=1000, help="first N MNIST test images")
    parser.add_argument("--batch", type=int, default=16, help="files per request")
    parser.add_argument("--data", type=Path, help=f"MNIST's mnist.npz (default: {DEFAULT_DATA})")
    parser.add_argument("--variant", nargs="+", choices=list(VARIANTS), default=["black-on-white"])
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT / "models",
        help="model base path for the in-process reference (default: the repository's models/)",
    )
    parser.add_argument("--plot", type=Path, help="write a PNG of the confusion matrices")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the tables and the command")
    args = parser.parse_args()
    if args.count < 1 or args.batch < 1:
        parser.error("--count and --batch must be at least 1")
    x, y = load_mnist(args.data, args.count)
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    command = shlex.join(["python", str(shown), *sys.argv[1:]])
    results: list[Result] = []
    version = 0
    with httpx.Client(base_url=args.url, timeout=120) as client:
        check_server(client)
        for variant in dict.fromkeys(args.variant):
            result, version = upload(client, variant, x, y, args.batch)
            results.append(result)
            print(
                f"{variant}: {result.correct}/{result.images} in {result.wall_seconds:.1f} s",
                flush=True,
            )
    model = f"digits version {version}"
    reference = reference_predictions(args.models / "digits" / str(version), x)
    for result in results:
        result.reference_correct = int((reference == y).sum())
    text = report(results, model, command)
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        saved = {
            "command": command,
            "url": args.url,
            "model": {"name": "digits", "version": version},
            "count": args.count,
            "batch": args.batch,
            "results": {r.variant: r.as_json() for r in results},
        }
        args.json.write_text(json.dumps(saved, indent=1) + "\n")
    if args.plot:
        plot(results, model, args.plot)
    written = [str(p) for p in (args.markdown, args.json, args.plot) if p]
    if written:
        print("written:", ", ".join(written))


if __name__ == "__main__":
    main()
