"""Helpers of the task API tests (tests/test_task_api.py): a small stand-in for `resnet50`,
real MNIST digits and votes from the repository, generated photos, images in every format the
endpoints take, hostile uploads, and multipart bodies. Nothing here needs ../shared/data.

The stand-in has resnet50's exact serving interface (`training.resnet50.serving_functions`:
the bytes and float signatures, Keras' `preprocess_input` in the graph), 1000 labels, the
ImageNet class index as an asset and a model card, but a network of a few thousand weights
instead of 25 million: average pooling to 8x8x3, then a dense softmax layer. It is position
sensitive (a rotated photo gives another answer), which the EXIF test relies on.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import keras
import numpy as np
from PIL import Image, ImageDraw

from tests.conftest import FIXTURES, encode, png
from training import resnet50
from training.export import ExportRequest, export_model
from training.votes import SHIPPED_DATA

MNIST_FIXTURES = FIXTURES / "mnist"  # real MNIST test digits, one per class, as PNG
VOTES_DATA = SHIPPED_DATA  # the UCI file, committed in training/data/
SEED = 20240

Weights = Literal["random", "imagenet"]
Part = tuple[str, tuple[str, bytes, str]]  # an httpx `files` entry: (field, (name, data, type))


# --- the resnet50 stand-in ----------------------------------------------------------------


def standin_model(seed: int = SEED) -> Any:
    """preprocess_input(images) [batch, 224, 224, 3] -> softmax over 1000 classes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((resnet50.IMAGE_SIZE, resnet50.IMAGE_SIZE, 3))
    scaled = keras.layers.Rescaling(1.0 / 64.0)(inputs)  # preprocess_input leaves +-128
    pooled = keras.layers.AveragePooling2D(pool_size=28)(scaled)  # 8x8x3: keeps positions
    flat = keras.layers.Flatten()(pooled)
    outputs = keras.layers.Dense(resnet50.NUM_CLASSES, activation="softmax")(flat)
    return keras.Model(inputs, outputs, name="resnet50_standin")


def standin_card(weights: Weights) -> dict[str, Any]:
    """The model card fields the task API reads (`weights`, `warning`), as resnet50's own
    export writes them (`training.resnet50._weights_card`)."""
    if weights == "random":
        weights_card: dict[str, Any] = {
            "weights": "random",
            "warning": resnet50.RANDOM_WEIGHTS_WARNING,
            "weights_source": {"origin": "random initialisation", "seed": SEED},
        }
    else:
        weights_card = {
            "weights": "imagenet",
            "weights_source": {"origin": "test stand-in", "matches_keras_release": True},
        }
    return {
        "task": "image classification: ImageNet (ILSVRC-2012), 1000 classes",
        "description": "a tiny stand-in for ResNet50 with its serving interface (tests only)",
        **weights_card,
        "hyperparameters": {"image_size": resnet50.IMAGE_SIZE, "seed": SEED},
    }


def export_standin(base: Path, model: Any, weights: Weights) -> Path:
    """Export `model` as the next version of `<base>/resnet50`; returns the version folder."""
    serve_bytes, predict_images = resnet50.serving_functions(model)
    index_path = base / resnet50.CLASS_INDEX_FILE
    index_path.write_text(json.dumps(dict(enumerate(class_index()))), encoding="utf-8")
    request = ExportRequest(
        name=resnet50.NAME,
        model=model,
        serving_fn=serve_bytes,
        labels=[name for _, name in class_index()],
        card=standin_card(weights),
        other_signatures={resnet50.FLOAT_SIGNATURE: predict_images},
        other_assets=[index_path],
    )
    return export_model(request, base, keep_versions=None)


def class_index() -> list[list[str]]:
    """[[wordnet-style id, label], ...] in output order, in the layout of Keras'
    imagenet_class_index.json (made-up classes: the stand-in knows no ImageNet)."""
    return [[f"n{9_000_000 + i:08d}", f"class_{i}"] for i in range(resnet50.NUM_CLASSES)]


def keras_pixels(encoded: bytes) -> np.ndarray:
    """Keras' documented ResNet50 input: img_to_array(load_img(f, target_size=(224, 224)))."""
    image = keras.utils.load_img(io.BytesIO(encoded), target_size=(224, 224))
    return np.asarray(keras.utils.img_to_array(image), dtype=np.float32)


# --- real data ----------------------------------------------------------------------------


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test digits of tests/fixtures/mnist (uint8 [10, 28, 28], white on black, one
    per class, in MNIST test-set order) and their labels."""
    pngs = sorted(MNIST_FIXTURES.glob("test*_label*.png"))
    assert len(pngs) == 10, f"expected 10 digits in {MNIST_FIXTURES}, found {len(pngs)}"
    images = np.stack([np.asarray(Image.open(path).convert("L")) for path in pngs])
    labels = np.array([int(path.stem.rsplit("label", 1)[1]) for path in pngs])
    return images, labels


def house_votes() -> list[tuple[str, list[str]]]:
    """The UCI rows: (party, 16 votes "y"/"n"/"?" in the file's column order)."""
    rows = []
    for line in VOTES_DATA.read_text(encoding="utf-8").splitlines():
        if line.strip():
            party, *votes = line.strip().split(",")
            rows.append((party, votes))
    return rows


# Generated photos, by name: (width, height). `big.jpg` has the size of a phone photo.
PHOTO_SIZES = {
    "street.jpg": (640, 480),
    "garden.jpg": (500, 375),
    "small.jpg": (160, 120),
    "thumb.jpg": (120, 90),
    "big.jpg": (3361, 2521),
}


@functools.cache
def photo_bytes(name: str) -> bytes:
    """A JPEG "photo" (quality 90): a lit gradient with coloured shapes and sensor noise,
    different for each name (seeded by it), so every region of every photo is distinct."""
    width, height = PHOTO_SIZES[name]
    rng = np.random.default_rng(list(name.encode()))
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    tint = rng.uniform(40, 215, 3)
    sky = tint + 60 * np.stack([x, y, x * y], axis=-1) - 30
    image = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        left, top = rng.uniform(0, width), rng.uniform(0, height)
        box = (
            left,
            top,
            left + rng.uniform(0.05, 0.4) * width,
            top + rng.uniform(0.05, 0.4) * height,
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3))
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "JPEG", quality=90)


# --- images -------------------------------------------------------------------------------


def gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB [height, width, 3]: smooth gradients plus noise (every region distinct)."""
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 40, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def noise_png(height: int, width: int, seed: int = 0) -> bytes:
    """An incompressible PNG: about height * width * 3 bytes."""
    rng = np.random.default_rng(seed)
    return png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def format_samples() -> dict[str, tuple[bytes, str]]:
    """Every format and mode the image endpoint must open: name -> (bytes, content type)."""
    rgb = Image.fromarray(gradient(180, 260))
    alpha = Image.fromarray(np.random.default_rng(1).integers(0, 256, (180, 260), np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    second = Image.fromarray(gradient(180, 260, seed=9)[::-1])
    sixteen = Image.fromarray(gradient(90, 130)[..., 0].astype(np.uint16) * 257)
    return {
        "photo.png": (encode(rgb, "PNG"), "image/png"),
        "anim.gif": (encode(rgb, "GIF", save_all=True, append_images=[second]), "image/gif"),
        "photo.bmp": (encode(rgb, "BMP"), "image/bmp"),
        "photo.webp": (encode(rgb, "WEBP", lossless=True), "image/webp"),
        "rgba.png": (encode(rgba, "PNG"), "image/png"),
        "palette.png": (encode(rgb.quantize(64), "PNG"), "image/png"),
        "gray.jpg": (encode(rgb.convert("L"), "JPEG"), "image/jpeg"),
        "cmyk.jpg": (encode(rgb.convert("CMYK"), "JPEG"), "image/jpeg"),
        "deep.png": (encode(sixteen, "PNG"), "image/png"),
        "unknown-type.jpg": (encode(rgb, "JPEG"), "application/octet-stream"),
    }


def exif_rotated_jpeg(upright: np.ndarray) -> bytes:
    """A JPEG whose pixels are `upright` turned a quarter left, with EXIF orientation 6
    ("rotate 90 degrees clockwise to display"), as a phone held upright writes it."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def png_header_bomb(width: int, height: int, rows: int = 4) -> bytes:
    """A tiny valid-looking 1-bit grayscale PNG that declares `width` x `height` pixels and
    carries the first `rows` rows (all white), compressed: decoding it would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter byte, then the packed bits
    pixels = zlib.compress(row * rows, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# --- multipart ----------------------------------------------------------------------------


def file_part(name: str, data: bytes, content_type: str = "image/png", field: str = "file") -> Part:
    return (field, (name, data, content_type))


def multipart(parts: list[Part]) -> tuple[bytes, str]:
    """The multipart/form-data body httpx would send for `parts`, and its content type."""
    request = httpx.Request("POST", "http://body.invalid/", files=parts)
    return request.read(), request.headers["content-type"]


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """A generator over `body`: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]
