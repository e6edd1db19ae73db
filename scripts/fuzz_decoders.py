"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of the request decoders, without a server.

Targets:
- `json`: bodies through orjson/stdlib parsing, the TF Serving codec (row and columnar), the
  V2 codec and the :classify/:regress example builder, against signatures of every dtype, then
  the inference core's check of the decoded inputs;
- `grpc`: TensorProto bytes through the gRPC codec and the same check;
- `image`: upload bytes through Pillow and the digits/ImageNet preprocessing.

Bad input must end in a ServingError (a 4xx, or INVALID_ARGUMENT); any other exception is a
crash, which libFuzzer reports with the input that caused it. Not part of the test suite
(atheris is not in the dev extra: it has no wheels for every platform):

    pip install atheris
    python scripts/fuzz_decoders.py json -max_total_time=300
    python scripts/fuzz_decoders.py image -runs=100000 some/corpus/dir

libFuzzer's own options and corpus directories follow the target name; without a corpus
directory, a temporary one is seeded with valid requests of each kind.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import atheris

with atheris.instrument_imports(include=["service"]):
    from service.core import classify_regress
    from service.core.dtypes import BY_TF_NAME
    from service.core.signatures import Signature, TensorInfo
    from service.core.validation import check_call
    from service.errors import ServingError
    from service.grpc import codec as grpc_codec
    from service.http import tfserving_codec as tfs
    from service.http import v2_codec as v2
    from service.http.json_io import parse_json
    from service.tasks.imagenet_format import imagenet_pixels
    from service.tasks.mnist_format import BlankImageError, mnist_pixels
    from service.tasks.uploads import Upload, open_image

import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image, ImageDraw
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2


def signature(inputs: dict[str, tuple[str, tuple[int | None, ...] | None]]) -> Signature:
    infos = {name: TensorInfo(name, BY_TF_NAME[d], shape) for name, (d, shape) in inputs.items()}
    return Signature("serving_default", "", infos, {}, meta_graph_pb2.SignatureDef())


# One input of each dtype ([batch]), a votes-like matrix, a scalar, an unknown rank, two inputs.
SIGNATURES = [
    *(signature({"x": (dtype, (None,))}) for dtype in BY_TF_NAME),
    signature({"votes": ("DT_FLOAT", (None, 16))}),
    signature({"x": ("DT_FLOAT", ())}),
    signature({"x": ("DT_FLOAT", None)}),
    signature({"a": ("DT_FLOAT", (None, 3)), "b": ("DT_INT32", (None,))}),
]


def fuzz_json(data: bytes) -> None:
    for allow_non_finite in (True, False):  # TF Serving's parser, and V2's
        with contextlib.suppress(ServingError):
            _decode_json(parse_json(data, allow_non_finite=allow_non_finite))


def _decode_json(body: Any) -> None:
    _each(lambda s: check_call(s, tfs.decode_inputs(tfs.parse_predict_request(body), s)))
    _each(lambda s: check_call(s, v2.decode_inputs(v2.parse_infer_request(body), s)))
    _each(lambda _: classify_regress.serialized_from_json(body))


def fuzz_grpc(data: bytes) -> None:
    try:
        proto = tensor_pb2.TensorProto.FromString(data)
    except DecodeError:  # not a TensorProto at all: the gRPC layer refuses it
        return
    for candidate in SIGNATURES[: len(BY_TF_NAME)]:  # one input `x` of each dtype
        typed = tensor_pb2.TensorProto()
        typed.CopyFrom(proto)  # as sent, and with the input's dtype to get past that check
        typed.dtype = types_pb2.DataType.Value(candidate.inputs["x"].dtype.tf_name)
        for sent in (proto, typed):
            _each(
                lambda s, p=sent: check_call(s, grpc_codec.decode_inputs({"x": p}, s, {})),
                [candidate],
            )


def fuzz_image(data: bytes) -> None:
    upload = Upload("fuzzed", "application/octet-stream", data)
    try:
        image = open_image(upload, max_pixels=4_000_000)
    except ServingError:
        return
    imagenet_pixels(image.copy())
    with contextlib.suppress(BlankImageError):  # answered 400 by the route
        mnist_pixels(image)


def _each(decode: Callable[[Signature], Any], signatures: list[Signature] = SIGNATURES) -> None:
    for candidate in signatures:
        with contextlib.suppress(ServingError):
            decode(candidate)


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from."""
    if target == "json":
        return [
            b'{"instances": [[1.0, 2.0, 3.0]], "signature_name": "serving_default"}',
            b'{"inputs": {"a": [[1, 2, 3]], "b": [4]}}',
            b'{"instances": [{"b64": "aGVsbG8="}, "text"]}',
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}',
            b'{"examples": [{"x": 1.5, "tags": ["a"]}], "context": {"c": 1}}',
            b'{"instances": [NaN, Infinity, -1e10, true]}',
        ]
    if target == "grpc":
        return [
            tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0]).SerializeToString(),
            tensor_pb2.TensorProto(dtype=7, string_val=[b"a", b"b"]).SerializeToString(),
            tensor_pb2.TensorProto(dtype=3, tensor_content=bytes(8)).SerializeToString(),
        ]
    seven = Image.new("RGB", (64, 80), "white")
    ImageDraw.Draw(seven).line([(10, 10), (50, 10), (25, 70)], fill="black", width=6)
    samples = []
    for image_format, image in [
        ("PNG", seven),
        ("JPEG", seven),
        ("GIF", seven.convert("P")),
        ("BMP", seven.convert("1")),
        ("WEBP", seven),
        ("PNG", Image.fromarray(np.asarray(seven.convert("L"), dtype=np.uint16) * 257)),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, image_format)
        samples.append(buffer.getvalue())
    return samples


TARGETS = {"json": fuzz_json, "grpc": fuzz_grpc, "image": fuzz_image}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus]")
    target = sys.argv.pop(1)
    if not any(not arg.startswith("-") for arg in sys.argv[1:]):  # no corpus directory given
        corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
        for index, seed in enumerate(seeds(target)):
            (corpus / f"seed-{index}").write_bytes(seed)
        sys.argv.append(str(corpus))
    atheris.Setup(sys.argv, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
