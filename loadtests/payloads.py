"""The items load tests send, and the request bodies made of them.

Real data where it is found, generated stand-ins where it is not (each says which, for the log
and the run record):
- digits: MNIST test images (`mnist.npz` in $MODELSERVE_DATA_DIR or ../shared/data), else digits
  drawn with a TrueType font at random sizes, slants and positions;
- texts: IMDB test reviews (`imdb.csv.gz`, same places), else reviews composed from phrases;
- votes: the UCI house-votes-84 rows shipped in training/data/ (always there);
- photos: every JPEG/PNG/GIF/BMP/WebP in `--photos DIR`, else ../shared/data/photos, else
  generated pictures (shapes on gradients, 160-1024 px, JPEG/PNG/WebP).

Each request draws its items at random from these pools, so no two bodies need be the same.
This module does not import Locust or TensorFlow: it is cheap to import and to test.
"""

from __future__ import annotations

import base64
import io
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson
from PIL import Image, ImageDraw, ImageFont
from urllib3 import encode_multipart_formdata

from training.data import DataNotFoundError, shared_data_dirs
from training.digits import load_mnist
from training.sentiment import load_reviews
from training.votes import SHIPPED_DATA, VOTE_COLUMNS, encode_votes

log = logging.getLogger("loadtests.payloads")
T = TypeVar("T")

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
}
# The shipped models' input names (their signatures: `modelserve` README, "The models").
INPUT_NAMES = {"digits": "image", "sentiment": "text", "votes": "votes"}


@dataclass(frozen=True)
class Upload:
    """A file as a multipart part: (file name, bytes, content type)."""

    name: str
    data: bytes
    content_type: str


@dataclass
class Corpus:
    """The pools requests draw from, and where each pool came from."""

    digits: np.ndarray  # uint8 [n, 28, 28], MNIST's format: white ink on black
    texts: list[str]
    votes: list[tuple[str, ...]]  # 16 of "y" / "n" / "?" in VOTE_COLUMNS order
    photos: list[Upload]
    sources: dict[str, str] = field(default_factory=dict)


def load_corpus(photos_dir: Path | None = None, size: int = 256, seed: int = 0) -> Corpus:
    """Up to `size` items of each kind (photos: all found, they are few), seeded."""
    rng = np.random.default_rng(seed)
    sources: dict[str, str] = {}
    digits, sources["digits"] = _digits(size, rng)
    texts, sources["texts"] = _texts(size, rng)
    votes, sources["votes"] = _votes(), str(SHIPPED_DATA)
    photos, sources["photos"] = _photos(photos_dir, rng)
    for kind, source in sources.items():
        log.info("load test %s: %s", kind, source)
    return Corpus(digits, texts, votes, photos, sources)


# -- sources --------------------------------------------------------------------------------


def _digits(size: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    try:
        mnist = load_mnist(None, allow_download=False)
    except DataNotFoundError:
        return drawn_digits(size, rng), "generated (mnist.npz not found: drawn with a font)"
    pick = rng.choice(len(mnist.x_test), size=min(size, len(mnist.x_test)), replace=False)
    return mnist.x_test[pick], f"MNIST test images from {mnist.path}"


def _texts(size: int, rng: np.random.Generator) -> tuple[list[str], str]:
    try:
        reviews = load_reviews(None, allow_download=False)
    except DataNotFoundError:
        return composed_reviews(size, rng), "generated (imdb.csv.gz not found: composed)"
    pick = rng.choice(len(reviews.test_texts), size=min(size, len(reviews.test_texts)))
    return [reviews.test_texts[i] for i in pick], f"IMDB test reviews from {reviews.path}"


def _votes() -> list[tuple[str, ...]]:
    rows = [line.split(",")[1:] for line in SHIPPED_DATA.read_text().splitlines() if line]
    return [tuple(row) for row in rows if len(row) == len(VOTE_COLUMNS)]


def _photos(photos_dir: Path | None, rng: np.random.Generator) -> tuple[list[Upload], str]:
    if photos_dir is not None:  # asked for by name: it must hold photos
        photos = read_photos(photos_dir)
        if not photos:
            raise DataNotFoundError(f"--photos {photos_dir}: no {sorted(PHOTO_SUFFIXES)} files")
        return photos, f"{len(photos)} photos from {photos_dir}"
    for folder in shared_data_dirs():
        if photos := read_photos(folder / "photos"):
            return photos, f"{len(photos)} photos from {folder / 'photos'}"
    return generated_photos(12, rng), "generated (no photos folder found: shapes on gradients)"


def read_photos(folder: Path) -> list[Upload]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    return [Upload(p.name, p.read_bytes(), _content_type(p.suffix)) for p in files]


def _content_type(suffix: str) -> str:
    kind = suffix.lower().lstrip(".")
    return CONTENT_TYPES["jpeg" if kind == "jpg" else kind]


# -- generated stand-ins --------------------------------------------------------------------


def drawn_digits(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` digits 0-9 drawn white on black at 28x28, in varied sizes, slants, positions."""
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for index in range(count):
        font = ImageFont.load_default(size=int(rng.integers(16, 24)))
        canvas = Image.new("L", (28, 28), 0)
        offset = (int(rng.integers(6, 10)), int(rng.integers(0, 4)))
        ImageDraw.Draw(canvas).text(offset, str(index % 10), fill=255, font=font)
        slant = float(rng.uniform(-15, 15))
        images[index] = np.asarray(canvas.rotate(slant, resample=Image.Resampling.BILINEAR))
    return images


_OPENINGS = ["This film", "The movie", "This picture", "The sequel", "Its story", "The cast"]
_VERDICTS = [
    "was a wonderful surprise",
    "is one of the best I have seen",
    "moved me to tears",
    "kept me on the edge of my seat",
    "was a boring mess",
    "is the worst thing I have seen this year",
    "wasted a great cast",
    "dragged on for far too long",
]
_DETAILS = [
    "The acting was superb.",
    "The dialogue felt wooden.",
    "I loved the soundtrack.",
    "The plot made no sense at all.",
    "Beautifully shot, every frame.",
    "I checked my watch every ten minutes.",
    "My whole family enjoyed it.",
    "Avoid it.",
]


def composed_reviews(count: int, rng: np.random.Generator) -> list[str]:
    """`count` reviews of 1-40 sentences made of positive and negative phrases."""
    reviews = []
    for _ in range(count):
        opening = f"{rng.choice(_OPENINGS)} {rng.choice(_VERDICTS)}."
        details = rng.choice(_DETAILS, size=int(rng.integers(0, 40)))
        reviews.append(" ".join([opening, *details]))
    return reviews


def generated_photos(count: int, rng: np.random.Generator) -> list[Upload]:
    """`count` pictures: random shapes on a colour gradient, 160-1024 px, JPEG/PNG/WebP."""
    photos = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(160, 1025, size=2))
        ramp = np.linspace(0, 1, width, dtype=np.float32)[np.newaxis, :, np.newaxis]
        low, high = rng.integers(0, 256, size=(2, 3))
        pixels = np.broadcast_to(low + (high - low) * ramp, (height, width, 3))
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 12))):
            x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
            y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1, y1), fill=colour)
        kind = ["jpeg", "png", "webp"][index % 3]
        buffer = io.BytesIO()
        image.save(buffer, format=kind.upper())
        photos.append(Upload(f"generated-{index}.{kind}", buffer.getvalue(), CONTENT_TYPES[kind]))
    return photos


# -- request bodies ---------------------------------------------------------------------------


class Bodies:
    """Request bodies of `count` items drawn at random from a corpus, for every route.

    The per-item work (pixels to nested lists, PNG and base64 encoding) is done once here, so
    the load generator spends its CPU on sending, not on preparing."""

    def __init__(self, corpus: Corpus, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self.corpus = corpus
        self.digit_rows = [digit_pixels(d) for d in corpus.digits]
        self.digit_flat = [
            np.round(d.astype(np.float64) / 255.0, 4).ravel().tolist() for d in corpus.digits
        ]
        self.digit_files = [
            digit_upload(d, self.random, f"digit-{i}.png") for i, d in enumerate(corpus.digits)
        ]
        self.vote_rows = [encode_votes(v).tolist() for v in corpus.votes]
        # The task API refuses a member without a single yes or no (one UCI row is all "?").
        self.voters = [v for v in corpus.votes if "y" in v or "n" in v]
        self.photo_instances = [b64_instance(photo.data) for photo in corpus.photos]

    def _pick(self, pool: Sequence[T], count: int) -> list[T]:
        return [self.random.choice(pool) for _ in range(count)]

    def tfserving(self, model: str, count: int) -> bytes:
        """POST /v1/models/{model}:predict in TF Serving's row format."""
        pools: dict[str, Sequence[object]] = {
            "digits": self.digit_rows,
            "sentiment": self.corpus.texts,
            "votes": self.vote_rows,
            "resnet50": self.photo_instances,
        }
        return orjson.dumps({"instances": self._pick(pools[model], count)})

    def v2(self, model: str, count: int) -> bytes:
        """POST /v2/models/{model}/infer with the model's one input, row-major data."""
        if model == "digits":
            shape, datatype = [count, 28, 28, 1], "FP32"
            data: list[object] = [x for row in self._pick(self.digit_flat, count) for x in row]
        elif model == "votes":
            shape, datatype = [count, 16], "FP32"
            data = [x for row in self._pick(self.vote_rows, count) for x in row]
        else:
            shape, datatype = [count], "BYTES"
            data = list(self._pick(self.corpus.texts, count))
        tensor = {"name": INPUT_NAMES[model], "shape": shape, "datatype": datatype, "data": data}
        return orjson.dumps({"inputs": [tensor]})

    def digit_uploads(self, count: int) -> list[Upload]:
        return self._pick(self.digit_files, count)

    def photo_uploads(self, count: int) -> list[Upload]:
        return self._pick(self.corpus.photos, count)

    def sentiment_task(self, count: int) -> bytes:
        return orjson.dumps({"texts": self._pick(self.corpus.texts, count)})

    def party_task(self, count: int) -> bytes:
        votes = self._pick(self.voters, count)
        return orjson.dumps({"votes": [party_record(v, self.random) for v in votes]})


def multipart(uploads: Sequence[Upload], field_name: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body of `uploads`, all in `field_name` fields: (body, type)."""
    fields = [(field_name, (u.name, u.data, u.content_type)) for u in uploads]
    return encode_multipart_formdata(fields)


def digit_pixels(digit: np.ndarray) -> list[list[list[float]]]:
    """A uint8 28x28 image as the digits model's input: [28][28][1] floats in 0..1."""
    scaled = np.round(digit.astype(np.float64) / 255.0, 4)
    return scaled[..., np.newaxis].tolist()  # type: ignore[no-any-return]


def b64_instance(data: bytes) -> dict[str, str]:
    """Binary data in TF Serving's JSON: {"b64": "..."}."""
    return {"b64": base64.b64encode(data).decode("ascii")}


def digit_upload(digit: np.ndarray, rng: random.Random, name: str) -> Upload:
    """A digit as a user would photograph it: dark ink on light paper, 28-140 px, PNG."""
    paper = Image.fromarray(255 - digit)
    side = rng.randint(28, 140)
    scaled = paper.resize((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    scaled.save(buffer, format="PNG")
    return Upload(name, buffer.getvalue(), "image/png")


def party_record(votes: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Votes by bill name as the task API takes them; a "?" is sent as "?" or left out (both
    mean not voting), at random."""
    return {
        bill: vote
        for bill, vote in zip(VOTE_COLUMNS, votes, strict=True)
        if vote != "?" or rng.random() < 0.5
    }
