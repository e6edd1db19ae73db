"""How long turning a JSON predict body into validated numpy takes, per request.

Compares, side by side on the same bodies, the naive path (stdlib `json` + `np.array`) with
the gateway's (orjson + `tfserving_codec.decode_inputs`, which also validates dtype, range and
shape). Run: python benchmarks/request_decoding.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from service.core.dtypes import from_tf_name
from service.core.signatures import Signature, TensorInfo
from service.http.json_io import parse_json
from service.http.tfserving_codec import decode_inputs, parse_predict_request


def signature(shape: tuple[int | None, ...]) -> Signature:
    tensor = TensorInfo("x", from_tf_name("DT_FLOAT"), shape)
    return Signature("serving_default", "", {"x": tensor}, {}, meta_graph_pb2.SignatureDef())


def body(batch: int, shape: tuple[int, ...]) -> bytes:
    rng = np.random.default_rng(0)
    values = rng.random((batch, *shape), dtype=np.float32).round(4)
    return json.dumps({"instances": values.tolist()}).encode()


def naive(raw: bytes) -> np.ndarray:
    return np.array(json.loads(raw)["instances"], dtype=np.float32)


def gateway(raw: bytes, sig: Signature) -> np.ndarray:
    request = parse_predict_request(parse_json(raw), booleans_possible=False)
    return decode_inputs(request, sig)["x"]


def median_ms(function: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    cases = [
        ("digits, 1 image (784 floats)", 1, (28, 28, 1)),
        ("digits, 32 images", 32, (28, 28, 1)),
        ("resnet50 floats, 1 image (150,528)", 1, (224, 224, 3)),
    ]
    print(f"{'body':38} {'bytes':>10} {'stdlib ms':>10} {'gateway ms':>11} {'speed-up':>9}")
    for name, batch, shape in cases:
        raw = body(batch, shape)
        sig = signature((None, *shape))
        assert np.array_equal(naive(raw), gateway(raw, sig))
        slow = median_ms(lambda raw=raw: naive(raw), args.repeat)
        fast = median_ms(lambda raw=raw, sig=sig: gateway(raw, sig), args.repeat)
        print(f"{name:38} {len(raw):>10,} {slow:>10.2f} {fast:>11.2f} {slow / fast:>8.1f}x")


if __name__ == "__main__":
    main()
