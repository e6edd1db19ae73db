"""Front-end workers run without TensorFlow's runtime (`service.protos`): the modules they import
load with TensorFlow's protobuf modules alone, and the gRPC codec's numpy conversion gives what
TensorFlow's own `tf.make_tensor_proto` / `tf.make_ndarray` give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from service.core.dtypes import BY_TF_NAME
from service.core.signatures import PREDICT_METHOD, Signature, TensorInfo
from service.errors import InvalidInputError
from service.grpc import codec
from tests.conftest import REPO_ROOT

FRONT_END_MODULES = [
    "service.http.app",
    "service.grpc.server",
    "service.grpc.services",
    "service.grpc.codec",
    "service.grpc.message_split",
    "service.metrics",
    "service.auth",
    "service.settings",
    "service.tls",
    "service.logs",
    "service.observer",
    "service.core.inference",
    "service.core.validation",
    "service.core.signatures",
    "service.core.dtypes",
    "service.core.tensors",
    "service.core.decoding",
    "service.core.record",
    "service.core.servable",
    "service.core.batching",
    "service.core.serving_config",
    "service.core.classify_regress",
]

# Runs in a fresh interpreter: imports the front end, sends a few dtypes through a serialized
# PredictRequest and back, and reports whether TensorFlow's runtime got loaded.
FRONT_END_SCRIPT = """
import importlib, json, sys, time
start = time.perf_counter()
from service.protos import tensorflow_runtime_loaded, use_proto_only_tensorflow
use_proto_only_tensorflow()
for name in MODULES:
    importlib.import_module(name)
from service.http.app import create_app
from service.grpc.server import start_grpc_server
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from service.core.dtypes import BY_TF_NAME
from service.core.signatures import PREDICT_METHOD, Signature, TensorInfo
from service.grpc import codec
seconds = time.perf_counter() - start
sent = {
    "DT_FLOAT": np.array([[1.5, -2.25], [3.0, 0.0]], np.float32),
    "DT_INT64": np.array([2**62, -1, 7], np.int64),
    "DT_STRING": np.array([b"a", b"\\x00\\xff", "é".encode()], object),
    "DT_BOOL": np.array([True, False, True]),
    "DT_HALF": np.array([0.5, 65504.0, -1.0], np.float16),
    "DT_HALF_SCALAR": np.array(1.5, np.float16),
}
def info(key):
    return TensorInfo(key, BY_TF_NAME[key.removesuffix("_SCALAR")], None)
inputs = {key: info(key) for key in sent}
signature = Signature("serving_default", PREDICT_METHOD, inputs, {}, meta_graph_pb2.SignatureDef())
request = predict_pb2.PredictRequest()
for key, proto in codec.encode_outputs(sent).items():
    request.inputs[key].CopyFrom(proto)
received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
decoded = codec.decode_inputs(received.inputs, signature, {})
for key, array in sent.items():
    assert decoded[key].dtype == array.dtype and decoded[key].tolist() == array.tolist(), key
with open("/proc/self/status") as status:  # ru_maxrss would count the forking parent's peak
    memory = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith("Vm")}
print(json.dumps({
    "runtime_loaded": tensorflow_runtime_loaded(),
    "tensorflow_python": "tensorflow.python" in sys.modules,
    "import_seconds": round(seconds, 2),
    "rss_mb": memory["VmRSS"] // 1024,
    "peak_rss_mb": memory["VmHWM"] // 1024,
}))
"""


def test_front_end_runs_without_tensorflow_runtime() -> None:
    script = f"MODULES = {FRONT_END_MODULES!r}\n{FRONT_END_SCRIPT}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"front end without TensorFlow's runtime: {report}")
    assert report["tensorflow_python"] is False
    assert report["runtime_loaded"] is False
    assert report["peak_rss_mb"] < 300  # TensorFlow's runtime alone takes about 500 MB


def _array(tf_name: str, values: list[object], shape: tuple[int, ...]) -> np.ndarray:
    dtype = BY_TF_NAME[tf_name].numpy
    if dtype.kind == "O":
        array = np.empty(len(values), object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype).reshape(shape)


_EDGE_VALUES: dict[str, list[object]] = {
    "DT_BOOL": [True, False, True, True, False, False],
    "DT_UINT8": [0, 255, 1, 7, 128, 3],
    "DT_UINT16": [0, 65535, 1, 7, 128, 3],
    "DT_UINT32": [0, 2**32 - 1, 1, 7, 128, 3],
    "DT_UINT64": [0, 2**64 - 1, 2**53 + 1, 7, 128, 3],
    "DT_INT8": [-128, 127, 0, -1, 5, 3],
    "DT_INT16": [-(2**15), 2**15 - 1, 0, -1, 5, 3],
    "DT_INT32": [-(2**31), 2**31 - 1, 0, -1, 5, 3],
    "DT_INT64": [-(2**63), 2**63 - 1, 2**53 + 1, -1, 5, 3],
    "DT_HALF": [np.nan, np.inf, -0.0, 65504.0, 6e-8, 0.1],
    "DT_FLOAT": [np.nan, -np.inf, -0.0, 3.4e38, 1e-45, 0.1],
    "DT_DOUBLE": [np.nan, np.inf, -0.0, 1.7e308, 5e-324, 0.1],
    "DT_BFLOAT16": [np.nan, np.inf, -0.0, 3.0e38, 1e-3, 0.1],
    "DT_STRING": [b"", b"a\x00b", "é".encode(), bytes(range(256)), "text", bytearray(b"xy")],
}
_SHAPES = [(), (1,), (1, 1), (0,), (2, 0), (6,), (2, 3), (3, 1, 2)]


def _arrays() -> list[np.ndarray]:
    arrays = []
    for tf_name, values in _EDGE_VALUES.items():
        for shape in _SHAPES:
            count = int(np.prod(shape))
            arrays.append(_array(tf_name, values[:count], shape))
    return [
        *arrays,
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.arange(20, dtype=np.int64)[::3],
        np.arange(12, dtype=ml_dtypes.bfloat16).reshape(3, 4)[:, 1],
        np.array([b"ab", b"c"], dtype="S2"),
        np.array(["ab", "é"]),
    ]


ARRAYS = _arrays()


def _label(array: np.ndarray) -> str:
    return f"{array.dtype}{list(array.shape)}"


@pytest.mark.parametrize("array", ARRAYS, ids=[_label(a) for a in ARRAYS])
def test_encoding_is_tensorflows_byte_for_byte(array: np.ndarray) -> None:
    ours = codec.encode_tensor(array)
    theirs = tf.make_tensor_proto(array)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def _typed(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """`proto`'s values in its dtype's typed field, as clients may send them."""
    typed = tensor_pb2.TensorProto(dtype=proto.dtype, tensor_shape=proto.tensor_shape)
    flat = array.ravel()
    if array.dtype in (np.float16, ml_dtypes.bfloat16):
        typed.half_val.extend(flat.view(np.uint16).tolist())
    else:
        name = types_pb2.DataType.Name(proto.dtype)
        getattr(typed, codec._VALUE_FIELDS[name]).extend(flat.tolist())
    return typed


def _decoded(proto: tensor_pb2.TensorProto) -> np.ndarray:
    tf_name = types_pb2.DataType.Name(proto.dtype)
    spec = TensorInfo("x", BY_TF_NAME[tf_name], None)
    signature = Signature("s", PREDICT_METHOD, {"x": spec}, {}, meta_graph_pb2.SignatureDef())
    return codec.decode_inputs({"x": proto}, signature, {})["x"]


def _protos() -> list[tensor_pb2.TensorProto]:
    protos = []
    for array in ARRAYS:
        if array.dtype.kind in "SU":  # decoded as object arrays, not in a signature's dtype
            continue
        proto = tf.make_tensor_proto(array)
        protos.append(proto)
        if proto.tensor_content:
            protos.append(_typed(proto, array))
    return protos


PROTOS = _protos()


@pytest.mark.parametrize(
    "proto",
    PROTOS,
    ids=[
        f"{types_pb2.DataType.Name(p.dtype)}{[d.size for d in p.tensor_shape.dim]}"
        f"{'-content' if p.tensor_content else '-typed'}"
        for p in PROTOS
    ],
)
def test_decoding_is_tensorflows(proto: tensor_pb2.TensorProto) -> None:
    ours, theirs = _decoded(proto), tf.make_ndarray(proto)
    assert (ours.dtype, ours.shape) == (theirs.dtype, theirs.shape)
    if ours.dtype == object:
        assert ours.tolist() == theirs.tolist()
    else:
        assert ours.tobytes() == theirs.tobytes()  # NaNs and -0.0 too


@pytest.mark.parametrize(
    ("tf_name", "field", "value"),
    [
        ("DT_INT8", "int_val", 128),
        ("DT_UINT8", "int_val", -1),
        ("DT_UINT16", "int_val", 70000),
        ("DT_HALF", "half_val", 70000),
        ("DT_BFLOAT16", "half_val", -1),
    ],
)
def test_out_of_range_typed_values_fail_as_in_tensorflow(
    tf_name: str, field: str, value: int
) -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(tf_name))
    proto.tensor_shape.dim.add(size=1)
    getattr(proto, field).append(value)
    with pytest.raises(OverflowError):
        tf.make_ndarray(proto)
    with pytest.raises(InvalidInputError, match="out of range"):
        _decoded(proto)
