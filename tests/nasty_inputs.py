"""A corpus of hostile and malformed requests for every protocol, each with the answer it must
get (tests/test_nasty_inputs.py sends them one by one; tests/test_memory_bad_requests.py sends
thousands of them to a server process and watches its memory).

Every REST error case names its status and words its `{"error": ...}` message must contain, so
"a useful message" is checked, not just "some 4xx". Some inputs are odd but valid and must be
answered 200, each saying why: NUL, RTL marks, emoji and 50,000 characters in texts, NaN where
TF Serving's REST API allows it, and CMYK, 16-bit, palette, transparent, 1-bit, animated and
EXIF-rotated images (decoded as a browser would show them).

The models are those of `build_repository` (served by `serve_repository`): the shipped digits,
sentiment and votes, a tiny stand-in for resnet50 (tests/task_models.py), and dtypes, multi,
examples and plus (tests/saved_models.py), under the default limits.
"""

from __future__ import annotations

import functools
import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from service.settings import Settings
from tests.conftest import MODELS_DIR, encode
from tests.saved_models import (
    DTYPE_VALUES,
    export_affine,
    export_dtypes,
    export_examples,
    export_multi_io,
    write_config,
)
from tests.server import running_server
from tests.task_models import (
    exif_rotated_jpeg,
    export_standin,
    file_part,
    multipart,
    png_header_bomb,
    standin_model,
)
from tests.test_grpc import predict_request as predict

MB = 1 << 20
HUGE_BYTES = 100 * MB  # above the default max_request_bytes (64 MiB)
MAX_TEXT_CHARS = Settings.model_fields["max_text_chars"].default
MAX_ITEMS = Settings.model_fields["max_items"].default


# --- the models --------------------------------------------------------------------------------


def build_repository(root: Path) -> tuple[Path, Path]:
    """<root>/repo with every model the corpus addresses, and its serving config (seconds)."""
    repo = root / "repo"
    for name in ("digits", "sentiment", "votes"):
        shutil.copytree(MODELS_DIR / name, repo / name)
    export_standin(repo, standin_model(), "imagenet")  # the task API refuses random weights
    export_dtypes(repo, "dtypes", 1)
    export_multi_io(repo, "multi", 1)
    export_examples(repo, "examples", 1)
    export_affine(repo, "plus", 1)
    names = ("digits", "sentiment", "votes", "resnet50", "dtypes", "multi", "examples")
    models: list[dict[str, Any]] = [{"name": name} for name in names]
    models.append({"name": "plus", "version_labels": {"stable": 1}})
    return repo, write_config(root / "serving.yaml", models)


@contextmanager
def serve_repository(root: Path) -> Iterator[str]:
    """A server (tests.server.running_server) of `build_repository(root)`; its base URL."""
    repo, config = build_repository(root)
    settings = Settings(model_base_path=repo, config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=180) as url:
        yield url


# --- REST cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestCase:
    """One request and the answer it must get. `huge` bodies (HUGE_BYTES) are not built in
    memory but streamed by `huge_body`: with a Content-Length (`declared`) or chunked."""

    id: str
    path: str
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    mentions: tuple[str, ...] = ()  # words the error message contains (case-insensitive)
    why: str = ""  # for a valid oddity: why 200 is right
    digit: int | None = None  # for a valid digits upload: the digit the answer must name
    huge: bool = False
    declared: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.content_type is not None:
            headers["content-type"] = self.content_type
        return headers


def bad(
    case_id: str, path: str, body: Any, *mentions: str, status: int = 400, **extra: Any
) -> RestCase:
    """An error case; `body` is sent as is when bytes, else as JSON."""
    raw = body if isinstance(body, bytes) else _json(body)
    return RestCase(case_id, path, status, raw, mentions=mentions, **extra)


def valid(case_id: str, path: str, body: Any, why: str, **extra: Any) -> RestCase:
    raw = body if isinstance(body, bytes) else _json(body)
    return RestCase(case_id, path, 200, raw, why=why, **extra)


def huge(case_id: str, path: str, *, declared: bool = True, multipart: bool = False) -> RestCase:
    content_type = "multipart/form-data; boundary=x" if multipart else "application/json"
    return RestCase(
        case_id,
        path,
        413,
        content_type=content_type,
        mentions=("limit",),
        huge=True,
        declared=declared,
    )


def huge_body(case: RestCase) -> Iterator[bytes]:
    """HUGE_BYTES, a megabyte at a time: brackets, or for a multipart case one well-formed
    file part (boundary `x`) that never ends, so that only the size limit stops it."""
    head = b""
    if (case.content_type or "").startswith("multipart/"):
        head = (
            b'--x\r\ncontent-disposition: form-data; name="file"; filename="big.png"\r\n'
            b"content-type: image/png\r\n\r\n"
        )
    yield head + b"[" * (MB - len(head))
    for _ in range(HUGE_BYTES // MB - 1):
        yield b"[" * MB


def _json(value: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape \ud800, as a hostile client would
    return json.dumps(value, allow_nan=True).encode("utf-8")


def _brackets(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


TFS = "/v1/models"
V2 = "/v2/models"
DIGITS, IMAGES = "/api/v1/digits", "/api/v1/images"
SENTIMENT, PARTY = "/api/v1/sentiment", "/api/v1/party"
ROW = [1, -1, 1, -1, 1, 1, -1, -1, -1, 1, 0, 1, 1, 1, -1, 1]  # 16 votes
DEEP = 100_000  # levels of [[[...]]]


def _dtypes(**changed: Any) -> dict[str, Any]:
    """A columnar `dtypes` request (its 12 inputs valid), some inputs replaced."""
    inputs = {f"x_{name}": values for name, values in DTYPE_VALUES.items()}
    return {"inputs": inputs | {f"x_{name}": value for name, value in changed.items()}}


def tfserving_cases() -> list[RestCase]:
    votes, text = f"{TFS}/votes:predict", f"{TFS}/sentiment:predict"
    dtypes, examples = f"{TFS}/dtypes:predict", f"{TFS}/examples"
    nan = float("nan")
    return [
        bad("tfs-nesting-100k", votes, f'{{"instances": {_brackets(DEEP, "1")}}}'.encode(), "JSON"),
        # "NaN" sends the body on to the stdlib parser, which has its own recursion limit
        bad(
            "tfs-nesting-100k-nan",
            votes,
            f'{{"instances": {_brackets(DEEP, "NaN")}}}'.encode(),
            "JSON",
        ),
        bad("tfs-numbers-nested-100", votes, {"instances": _nest(1.0, 100)}, "nested"),
        bad("tfs-strings-nested-100", text, {"instances": _nest("good", 100)}, "nested"),
        bad("tfs-empty-body", votes, b"", "empty"),
        bad("tfs-binary-body", votes, b"\x89PNG\r\n\x1a\n\x00\x00", "JSON"),
        bad("tfs-invalid-utf8", text, b'{"instances": ["\xff\xfe"]}', "JSON"),
        bad("tfs-top-level-list", votes, [ROW], "object"),
        bad(
            "tfs-instances-and-inputs", votes, {"instances": [ROW], "inputs": [ROW]}, "exactly one"
        ),
        bad("tfs-empty-instances", votes, {"instances": []}, "instances"),
        bad("tfs-ragged-instances", votes, {"instances": [ROW, ROW[:15]]}, "ragged"),
        bad("tfs-wrong-row-length", votes, {"instances": [ROW[:15]]}, "shape", "16"),
        bad("tfs-strings-for-numbers", votes, {"instances": [["y"] * 16]}, "expected numbers"),
        bad("tfs-booleans-for-numbers", votes, {"instances": [[True] * 16]}, "booleans"),
        bad("tfs-nulls-for-numbers", votes, {"instances": [[None] * 16]}, "expected numbers"),
        bad("tfs-b64-for-numbers", votes, {"instances": [{"b64": "AAAA"}]}, "expected numbers"),
        bad("tfs-b64-not-base64", text, {"instances": [{"b64": "not base64!"}]}, "base64"),
        bad("tfs-b64-not-a-string", text, {"instances": [{"b64": 12}]}, "b64"),
        bad("tfs-number-for-string", text, {"instances": [42]}, "expected strings"),
        bad("tfs-lone-surrogate", text, {"instances": ["\ud800 bad"]}, "JSON"),
        # orjson refuses the surrogate, the body holds "NaN": the stdlib parser accepts it
        bad("tfs-lone-surrogate-via-nan", text, {"instances": ["\ud800 NaN"]}, "Unicode"),
        bad("tfs-nan-into-int", dtypes, _dtypes(int32=[nan, 1]), "x_int32", "integers"),
        bad("tfs-infinity-into-int", dtypes, _dtypes(int64=[float("inf"), 1]), "x_int64"),
        bad("tfs-1e400", votes, b'{"instances": [[1e400' + b", 1" * 15 + b"]]}", "JSON"),
        bad("tfs-int8-out-of-range", dtypes, _dtypes(int8=[1000, 1]), "x_int8", "out of range"),
        bad("tfs-uint8-negative", dtypes, _dtypes(uint8=[-1, 1]), "x_uint8", "out of range"),
        bad("tfs-int-beyond-int64", dtypes, _dtypes(int64=[2**70, 1]), "x_int64"),
        bad("tfs-fraction-into-int", dtypes, _dtypes(int16=[1.5, 1]), "x_int16", "fractions"),
        bad("tfs-float16-overflow", dtypes, _dtypes(float16=[1e6, 1]), "x_float16", "range"),
        bad("tfs-numbers-for-bool", dtypes, _dtypes(bool=[1, 0]), "x_bool", "booleans"),
        bad("tfs-missing-inputs", dtypes, {"inputs": {"x_bool": [True]}}, "missing"),
        bad("tfs-unknown-signature", votes, {"instances": [ROW], "signature_name": "no"}, "'no'"),
        bad(
            "tfs-signature-not-text",
            votes,
            {"instances": [ROW], "signature_name": 7},
            "signature_name",
        ),
        bad("tfs-unknown-method", f"{TFS}/votes:explode", {}, "predict", status=404),
        bad(
            "tfs-version-word", f"{TFS}/votes/versions/one:predict", {"instances": [ROW]}, "version"
        ),
        bad("tfs-version-superscript", f"{TFS}/votes/versions/\u00b2:predict", {}, "version"),
        bad("tfs-version-5000-digits", f"{TFS}/votes/versions/{'9' * 5000}:predict", {}, "version"),
        bad("tfs-version-zero", f"{TFS}/votes/versions/0:predict", {"instances": [ROW]}, "version"),
        bad(
            "tfs-version-10e30", f"{TFS}/votes/versions/{10**30}:predict", {}, "version", status=404
        ),
        bad(
            "tfs-unknown-label",
            f"{TFS}/plus/labels/nope:predict",
            {"instances": [1.0]},
            "nope",
            status=404,
        ),
        bad(
            "tfs-timeout-nan",
            votes,
            {"instances": [ROW]},
            "X-Request-Timeout",
            headers={"x-request-timeout": "NaN"},
        ),
        bad("tfs-classify-numbers", f"{examples}:classify", {"examples": [1, 2]}, "examples[0]"),
        bad(
            "tfs-classify-no-feature",
            f"{examples}:classify",
            {"examples": [{"y": 1.0}], "signature_name": "classify"},
            "x",
        ),
        bad(
            "tfs-regress-nested-values",
            f"{examples}:regress",
            {"examples": [{"x": [[1.0]]}], "signature_name": "regress"},
            "examples[0]",
        ),
        huge("tfs-100mb-declared", votes),
        huge("tfs-100mb-chunked", votes, declared=False),
        valid(
            "tfs-nan-and-infinity",
            votes,
            b'{"instances": [[NaN, Infinity, -Infinity' + b", 0" * 13 + b"]]}",
            "TF Serving's REST API accepts NaN and Infinity tokens for float inputs",
        ),
        valid(
            "tfs-text-plain",
            votes,
            {"instances": [ROW]},
            "TF Serving reads the body as JSON, whatever its type",
            content_type="text/plain",
        ),
        valid(
            "tfs-unicode-oddities",
            text,
            {
                "instances": [
                    "NUL \u0000 in",
                    "\u202eRTL override\u202c",
                    "\U0001f44d\U0001f3fd\u200d",
                    "\ufffe\uffff",
                ]
            },
            "valid Unicode; the model's text cleaning turns what is not a word into spaces",
        ),
    ]


def _v2(name: str, shape: Any, datatype: Any, data: Any, **request: Any) -> dict[str, Any]:
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return {"inputs": [tensor], **request}


def v2_cases() -> list[RestCase]:
    votes, text = f"{V2}/votes/infer", f"{V2}/sentiment/infer"
    row = _v2("votes", [1, 16], "FP32", ROW)
    return [
        bad(
            "v2-nesting-100k",
            votes,
            json.dumps(row).replace(json.dumps(ROW), _brackets(DEEP, "1")).encode(),
            "JSON",
        ),
        bad("v2-strings-nested-100", text, _v2("text", [1], "BYTES", _nest("good", 100)), "nested"),
        bad("v2-huge-shape", votes, _v2("votes", [2**62, 2**62], "FP32", ROW), "elements"),
        bad("v2-billion-rows-16-values", votes, _v2("votes", [10**9, 16], "FP32", ROW), "elements"),
        bad("v2-negative-shape", votes, _v2("votes", [-1, 16], "FP32", ROW), "non-negative"),
        bad("v2-fractional-shape", votes, _v2("votes", [1.5, 16], "FP32", ROW), "shape"),
        bad("v2-shape-not-a-list", votes, _v2("votes", "1x16", "FP32", ROW), "shape"),
        bad("v2-100-dimensions", votes, _v2("votes", [1] * 100, "FP32", [1.0]), "shape"),
        bad("v2-shape-vs-data", votes, _v2("votes", [2, 16], "FP32", ROW), "32 elements", "16"),
        bad("v2-shape-vs-model", votes, _v2("votes", [2, 8], "FP32", ROW), "expected shape"),
        bad("v2-datatype-mismatch", votes, _v2("votes", [1, 16], "FP64", ROW), "FP64", "FP32"),
        bad("v2-unknown-datatype", votes, _v2("votes", [1, 16], "FP128", ROW), "FP128"),
        bad("v2-datatype-not-text", votes, _v2("votes", [1, 16], 32, ROW), "datatype"),
        bad("v2-nan-token", votes, _json(row).replace(b"[1, -1", b"[NaN, -1"), "JSON"),
        bad("v2-strings-for-numbers", votes, _v2("votes", [1, 16], "FP32", ["1"] * 16), "strings"),
        bad("v2-ragged-data", votes, _v2("votes", [2, 16], "FP32", [ROW, ROW[:8] * 3]), "ragged"),
        bad(
            "v2-b64-in-bytes",
            text,
            _v2("text", [1], "BYTES", [{"b64": "AAAA"}]),
            "expected strings",
        ),
        bad(
            "v2-no-data",
            votes,
            {"inputs": [{"name": "votes", "shape": [1, 16], "datatype": "FP32"}]},
            "data",
        ),
        bad("v2-inputs-not-a-list", votes, {"inputs": {"votes": ROW}}, "inputs"),
        bad("v2-input-twice", votes, {"inputs": row["inputs"] * 2}, "twice"),
        bad("v2-unknown-input", votes, _v2("nope", [1, 16], "FP32", ROW), "nope"),
        bad("v2-unknown-output", votes, row | {"outputs": [{"name": "nope"}]}, "nope"),
        bad("v2-id-not-text", votes, row | {"id": 5}, "id"),
        bad("v2-lone-surrogate", text, _v2("text", [1], "BYTES", ["\udfff"]), "JSON"),
        bad("v2-version-word", f"{V2}/votes/versions/x/infer", row, "version"),
        huge("v2-100mb-declared", votes),
        valid(
            "v2-unicode-oddities",
            text,
            _v2(
                "text",
                [3],
                "BYTES",
                ["\u0000", "\u200f\u05e9\u05dc\u05d5\u05dd", "\U0001f600" * 1000],
            ),
            "valid Unicode: NUL, an RTL mark and Hebrew, astral-plane emoji",
        ),
    ]


def task_json_cases() -> list[RestCase]:
    seven = [[0] * 28 for _ in range(28)]
    seven[5][5:22] = [255] * 17
    first_row = "images.0.0.0"
    return [
        bad(
            "sentiment-text-over-limit",
            SENTIMENT,
            {"texts": ["a" * (MAX_TEXT_CHARS + 1)]},
            "characters",
            f"{MAX_TEXT_CHARS:,}",
            status=413,
        ),
        valid(
            "sentiment-50k-emoji",
            SENTIMENT,
            {"texts": ["\U0001f3ac" * MAX_TEXT_CHARS]},
            "the limit counts characters, not UTF-8 bytes: 50,000 emoji are 200 KB",
        ),
        valid(
            "sentiment-unicode-oddities",
            SENTIMENT,
            {
                "texts": [
                    "NUL\u0000byte",
                    "\u200fRTL mark \u05d8\u05d5\u05d1",
                    "\U0001f469\u200d\U0001f52c great",
                    "Z\u0351\u0300\u0301algo",
                    "\ufeffBOM",
                ]
            },
            "valid Unicode; the model's text cleaning turns what is not a word into spaces",
        ),
        bad("sentiment-lone-surrogate", SENTIMENT, {"texts": ["\ud800"]}, "JSON"),
        bad("sentiment-surrogate-in-utf8", SENTIMENT, b'{"texts": ["\xed\xa0\x80"]}', "JSON"),
        bad("sentiment-raw-nul-in-json", SENTIMENT, b'{"texts": ["a\x00b"]}', "JSON"),
        bad("sentiment-empty-text", SENTIMENT, {"texts": [""]}, "texts.0"),
        bad("sentiment-numbers-for-texts", SENTIMENT, {"texts": [1, 2]}, "texts.0"),
        bad("sentiment-text-not-a-list", SENTIMENT, {"texts": "great"}, "texts"),
        bad(
            "sentiment-nesting-100k",
            SENTIMENT,
            ('{"texts": ' + _brackets(DEEP, '"a"') + "}").encode(),
            "JSON",
        ),
        bad("sentiment-nan-token", SENTIMENT, b'{"texts": [NaN]}', "JSON"),
        bad(
            "sentiment-too-many-items",
            SENTIMENT,
            {"texts": ["ok"] * (MAX_ITEMS + 1)},
            "items",
            status=413,
        ),
        bad("sentiment-extra-key", SENTIMENT, {"texts": ["ok"], "x": 1}, "x"),
        bad(
            "sentiment-form-type",
            SENTIMENT,
            {"texts": ["ok"]},
            "application/json",
            status=415,
            content_type="application/x-www-form-urlencoded",
        ),
        bad(
            "sentiment-text-plain",
            SENTIMENT,
            {"texts": ["ok"]},
            "application/json",
            status=415,
            content_type="text/plain",
        ),
        huge("sentiment-100mb-declared", SENTIMENT),
        bad("party-unknown-bill", PARTY, {"votes": [{"tax-cuts": "y"}]}, "tax-cuts"),
        bad("party-bad-vote", PARTY, {"votes": [{"crime": "maybe"}]}, "votes.0"),
        bad("party-lists-for-records", PARTY, {"votes": [["y"] * 16]}, "votes.0"),
        bad("digits-27-rows", DIGITS, {"images": [seven[:27]]}, "images.0"),
        bad("digits-pixel-256", DIGITS, {"images": [[[256] * 28, *seven[1:]]]}, first_row),
        bad("digits-negative-pixel", DIGITS, {"images": [[[-1] * 28, *seven[1:]]]}, first_row),
        bad("digits-fractional-pixel", DIGITS, {"images": [[[0.5] * 28, *seven[1:]]]}, first_row),
        bad("digits-text-pixels", DIGITS, {"images": [[["0"] * 28, *seven[1:]]]}, first_row),
        bad(
            "digits-nan-pixel",
            DIGITS,
            _json({"images": [seven]}).replace(b"255", b"NaN", 1),
            "JSON",
        ),
        bad(
            "digits-raw-png-body",
            DIGITS,
            digit_variants()["palette.png"][0],
            "multipart/form-data",
            status=415,
            content_type="image/png",
        ),
    ]


# --- images ------------------------------------------------------------------------------------


@functools.cache
def digit_variants() -> dict[str, tuple[bytes, str]]:
    """Valid but unusual encodings of a photo-sized 7 (dark ink on white paper, 600x700):
    name -> (bytes, content type)."""
    seven = Image.new("RGB", (600, 700), "white")
    ImageDraw.Draw(seven).line([(150, 150), (450, 150), (250, 600)], fill="black", width=40)
    transparent = Image.new("RGBA", seven.size, (0, 0, 0, 0))
    transparent.putalpha(Image.eval(seven.convert("L"), lambda v: 255 - v))
    gray16 = Image.fromarray(np.asarray(seven.convert("L"), dtype=np.uint16) * 257)
    second_frame = Image.new("P", seven.size, 0)
    gif = encode(seven.convert("P"), "GIF", save_all=True, append_images=[second_frame])
    return {
        "cmyk.jpg": (encode(seven.convert("CMYK"), "JPEG"), "image/jpeg"),
        "16-bit.png": (encode(gray16, "PNG"), "image/png"),
        "palette.png": (encode(seven.quantize(16), "PNG"), "image/png"),
        "animated.gif": (gif, "image/gif"),
        "exif-rotated.jpg": (exif_rotated_jpeg(np.asarray(seven)), "image/jpeg"),
        "transparent.png": (encode(transparent, "PNG"), "image/png"),
        "1-bit.bmp": (encode(seven.convert("1"), "BMP"), "image/bmp"),
        "lossless.webp": (encode(seven, "WEBP", lossless=True), "image/webp"),
        "no-type.jpg": (encode(seven, "JPEG"), "application/octet-stream"),
    }


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_size_png() -> bytes:
    """A PNG whose header says 0x0 pixels."""
    header = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(b"")), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def gif_header_bomb() -> bytes:
    """A GIF whose logical screen is 65535x65535 (4.3 gigapixels), with one 1x1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00" * 6
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def noise_image(image_format: str) -> bytes:
    """240x180 of random pixels: incompressible, so a cut file misses most of its data."""
    pixels = np.random.default_rng(7).integers(0, 256, (180, 240, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), image_format)


def _upload(case_id: str, path: str, parts: list[Any], status: int, **extra: Any) -> RestCase:
    body, content_type = multipart(parts)
    return RestCase(case_id, path, status, body, content_type=content_type, **extra)


def upload_cases() -> list[RestCase]:
    why = "a valid image in a taken format: decoded as shown (EXIF orientation applied, first "
    why += "frame, 16 bits scaled, alpha resolved)"
    hostile = [
        ("png-10-gigapixels", png_header_bomb(100_000, 100_000), "image/png", 413, "pixel limit"),
        ("png-48-megapixels", png_header_bomb(8_000, 6_000), "image/png", 413, "8000x6000"),
        ("png-100-megapixels", png_header_bomb(10_000, 10_000), "image/png", 413, "10000x10000"),
        ("gif-4-gigapixels", gif_header_bomb(), "image/gif", 413, "pixel limit"),
        ("truncated-png", noise_image("PNG")[:60_000], "image/png", 400, "truncated"),
        ("truncated-jpeg", noise_image("JPEG")[:20_000], "image/jpeg", 400, "truncated"),
        ("jpeg-header-only", noise_image("JPEG")[:120], "image/jpeg", 400, "not a"),
        ("zero-bytes", b"", "image/png", 400, "empty"),
        ("zero-by-zero-png", zero_size_png(), "image/png", 400, "zero-by-zero-png"),
        ("text-as-png", b"hello, I am not an image", "image/png", 400, "not a"),
        ("tiff-no-type", noise_image("TIFF"), "application/octet-stream", 400, "not a"),
        ("svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "svg"),
        ("png-as-text-plain", digit_variants()["palette.png"][0], "text/plain", 415, "text/plain"),
    ]
    cases = []
    for path in (DIGITS, IMAGES):
        route = path.rsplit("/", 1)[1]
        for name, (data, content_type) in digit_variants().items():
            part = file_part(name, data, content_type)
            digit = 7 if path == DIGITS else None  # so: decoded right, not just decoded
            cases.append(_upload(f"{route}-{name}", path, [part], 200, why=why, digit=digit))
        for name, data, content_type, status, mention in hostile:
            part = file_part(name, data, content_type)
            cases.append(_upload(f"{route}-{name}", path, [part], status, mentions=(mention,)))
    seven = digit_variants()["palette.png"]
    body, content_type = multipart([file_part("7.png", *seven)])
    cut = len(body) - len(content_type.split("boundary=")[1]) - 8  # inside the closing boundary
    dot = encode(Image.new("L", (1, 1), 0), "PNG")
    return [
        *cases,
        _upload(
            "digits-one-pixel", DIGITS, [file_part("dot.png", dot)], 400, mentions=("no digit",)
        ),
        _upload(
            "images-17-files",
            IMAGES,
            [file_part(f"{i}.png", *seven) for i in range(17)],
            413,
            mentions=("16 files",),
        ),
        _upload(
            "images-text-field",
            IMAGES,
            [("top_k", (None, b"3", None)), file_part("7.png", *seven)],
            400,
            mentions=("query string",),
        ),
        _upload(
            "images-field-not-file",
            IMAGES,
            [file_part("7.png", *seven, field="image")],
            400,
            mentions=("'image'",),
        ),
        bad(
            "images-no-files",
            IMAGES,
            b"--x--\r\n",
            "no files",
            content_type="multipart/form-data; boundary=x",
        ),
        bad("images-no-boundary", IMAGES, body, "boundary", content_type="multipart/form-data"),
        bad(
            "images-truncated-multipart", IMAGES, body[:cut], "truncated", content_type=content_type
        ),
        bad("images-json-body", IMAGES, {"images": []}, "multipart/form-data", status=415),
        bad("images-top-k-zero", f"{IMAGES}?top_k=0", body, "top_k", content_type=content_type),
        bad("images-top-k-word", f"{IMAGES}?top_k=five", body, "top_k", content_type=content_type),
        bad(
            "images-version-zero", f"{IMAGES}?version=0", body, "version", content_type=content_type
        ),
        huge("images-100mb-declared", IMAGES, multipart=True),
        huge("images-100mb-chunked", IMAGES, declared=False, multipart=True),
    ]


@functools.cache
def rest_cases() -> tuple[RestCase, ...]:
    cases = (*tfserving_cases(), *v2_cases(), *task_json_cases(), *upload_cases())
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, duplicates
    return cases


# --- gRPC cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrpcCase:
    """A PredictRequest and the status code it must get (OK for a valid oddity)."""

    id: str
    request: predict_pb2.PredictRequest
    code: str  # a grpc.StatusCode name
    mentions: tuple[str, ...] = ()


def tensor(dtype: int, shape: list[int] | None, **values: Any) -> tensor_pb2.TensorProto:
    """A TensorProto as a client may send it (shape None: unknown rank)."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    if shape is None:
        proto.tensor_shape.unknown_rank = True
    for size in shape or ():
        proto.tensor_shape.dim.append(tensor_shape_pb2.TensorShapeProto.Dim(size=size))
    return proto


def _dtypes_request(**changed: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    """A valid `dtypes` request (its 12 inputs), some inputs replaced."""
    inputs = {
        f"x_{name}": tf.make_tensor_proto(np.array(values, dtype=np.dtype(name)))
        for name, values in DTYPE_VALUES.items()
    }
    return predict("dtypes", inputs | {f"x_{name}": p for name, p in changed.items()})


def grpc_cases() -> list[GrpcCase]:
    f32, text, types = types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2
    row = [float(v) for v in ROW]
    invalid = "INVALID_ARGUMENT"

    def votes(proto: tensor_pb2.TensorProto, *output_filter: str) -> predict_pb2.PredictRequest:
        return predict("votes", {"votes": proto}, output_filter=output_filter)

    def reviews(proto: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
        return predict("sentiment", {"text": proto})

    return [
        GrpcCase(
            "grpc-shape-16-with-3-values",
            votes(tensor(f32, [1, 16], float_val=[1, 2, 3])),
            invalid,
            ("3 values",),
        ),
        GrpcCase(
            "grpc-shape-10-with-3-values",
            votes(tensor(f32, [10], float_val=[1, 2, 3])),
            invalid,
            ("3 values",),
        ),
        GrpcCase(
            "grpc-content-63-bytes",
            votes(tensor(f32, [1, 16], tensor_content=bytes(63))),
            invalid,
            ("tensor_content", "63"),
        ),
        GrpcCase(
            "grpc-content-65-bytes",
            votes(tensor(f32, [1, 16], tensor_content=bytes(65))),
            invalid,
            ("tensor_content",),
        ),
        GrpcCase(
            "grpc-string-for-float",
            votes(tensor(text, [1, 16], string_val=[b"1"] * 16)),
            invalid,
            ("DT_FLOAT", "DT_STRING"),
        ),
        GrpcCase(
            "grpc-double-for-float",
            votes(tensor(types.DT_DOUBLE, [1, 16], double_val=row)),
            invalid,
            ("DT_DOUBLE",),
        ),
        GrpcCase(
            "grpc-unknown-dtype", votes(tensor(999, [1, 16], float_val=row)), invalid, ("999",)
        ),
        # refused from the rows the shape declares, before any value is looked at
        GrpcCase("grpc-huge-dims", votes(tensor(f32, [2**40, 2**40])), invalid, ("rows",)),
        GrpcCase(
            "grpc-huge-dims-with-content",
            votes(tensor(f32, [2**31, 16], tensor_content=bytes(64))),
            invalid,
            ("rows",),
        ),
        GrpcCase(
            "grpc-too-few-values",
            votes(tensor(f32, [2, 16], float_val=row)),
            invalid,
            ("values", "32"),
        ),
        GrpcCase(
            "grpc-content-too-short",
            votes(tensor(f32, [2, 16], tensor_content=bytes(64))),
            invalid,
            ("tensor_content", "128"),
        ),
        GrpcCase(
            "grpc-negative-dim", votes(tensor(f32, [-1, 16], float_val=row)), invalid, ("negative",)
        ),
        GrpcCase("grpc-unknown-rank", votes(tensor(f32, None, float_val=row)), invalid, ("shape",)),
        GrpcCase(
            "grpc-100-dimensions",
            votes(tensor(f32, [1] * 100, float_val=[1])),
            invalid,
            ("'votes'",),
        ),
        GrpcCase(
            "grpc-shape-vs-model",
            votes(tensor(f32, [2, 8], float_val=row)),
            invalid,
            ("expected shape",),
        ),
        GrpcCase(
            "grpc-values-in-int-val",
            votes(tensor(f32, [1, 16], int_val=range(16))),
            invalid,
            ("0 values",),
        ),
        GrpcCase("grpc-no-inputs", predict("votes", {}), invalid, ("missing",)),
        GrpcCase(
            "grpc-unknown-input",
            predict("votes", {"nope": tensor(f32, [1, 16], float_val=row)}),
            invalid,
            ("nope",),
        ),
        GrpcCase("grpc-no-model-name", predict("", {}), invalid, ("model_spec.name",)),
        GrpcCase(
            "grpc-string-content",
            reviews(tensor(text, [1], tensor_content=b"\x05hello")),
            invalid,
            ("string_val",),
        ),
        GrpcCase(
            "grpc-int8-1000",
            _dtypes_request(int8=tensor(types.DT_INT8, [2], int_val=[1000, 1])),
            invalid,
            ("x_int8", "range"),
        ),
        GrpcCase(
            "grpc-uint8-negative",
            _dtypes_request(uint8=tensor(types.DT_UINT8, [2], int_val=[-1, 1])),
            invalid,
            ("x_uint8", "range"),
        ),
        GrpcCase(
            "grpc-half-val-70000",
            _dtypes_request(float16=tensor(types.DT_HALF, [2], half_val=[70_000, 1])),
            invalid,
            ("x_float16", "range"),
        ),
        GrpcCase(
            "grpc-unknown-output-filter",
            votes(tensor(f32, [1, 16], float_val=row), "nope"),
            invalid,
            ("nope",),
        ),
        GrpcCase(
            "grpc-nan-and-infinity",
            votes(tensor(f32, [1, 16], float_val=[float("nan"), float("inf"), *row[2:]])),
            "OK",
        ),
        GrpcCase(
            "grpc-bytes-not-utf8",
            reviews(tensor(text, [2], string_val=[b"\xff\xfe not utf-8", b"\x00"])),
            "OK",
        ),
    ]
