"""Open Inference Protocol gRPC tensors (`ModelInferRequest` / `ModelInferResponse`) <-> numpy.

An input comes either typed, in the `contents` field of its datatype, or raw, in
`raw_input_contents` (one entry per input, in input order; service.v2.raw_tensors). A request uses
one form for all its inputs, as the protocol requires. The answer uses the request's form, as
KServe's servers do: raw for raw requests (Triton's clients send and read only raw), typed for
typed ones, and raw for a datatype `contents` cannot hold (FP16, BF16). Every tensor is checked as
V2 REST checks it: its name, the model's own datatype (no silent casts), a non-negative shape, and
exactly prod(shape) elements."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from service.core.decoding import object_array
from service.core.dtypes import DTYPES, from_v2_name
from service.core.signatures import DEFAULT_SIGNATURE, Signature
from service.core.validation import check_names
from service.errors import InvalidInputError, ModelFailureError
from service.v2 import raw_tensors

# The `InferTensorContents` field that holds each datatype (FP16 and BF16: raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    **dict.fromkeys(("INT8", "INT16", "INT32"), "int_contents"),
    "INT64": "int64_contents",
    **dict.fromkeys(("UINT8", "UINT16", "UINT32"), "uint_contents"),
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_V2_DATATYPES = {entry.numpy: entry.v2_name for entry in DTYPES}
# Request parameters Triton's clients and tools send that change nothing here: scheduling hints,
# and perf_analyzer's request for a final empty response of a decoupled (streaming) model.
_IGNORED_PARAMETERS = frozenset(
    {
        "priority",
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "triton_enable_empty_final_response",
    }
)


@dataclass(frozen=True)
class InferEnvelope:
    """What a request asks besides its inputs."""

    signature_name: str
    output_names: list[str]
    raw: bool  # the inputs came (and the outputs go) as raw contents
    timeout_ms: float | None  # the `timeout` parameter (Triton's, in microseconds)


def parse_envelope(request: service_pb2.ModelInferRequest) -> InferEnvelope:
    parameters = request.parameters
    signature_name = DEFAULT_SIGNATURE
    if "signature_name" in parameters:
        signature_name = _string_parameter(parameters["signature_name"], "signature_name")
    timeout_ms = None
    if "timeout" in parameters:
        timeout_ms = _int_parameter(parameters["timeout"], "timeout") / 1000
    unknown = set(parameters) - _IGNORED_PARAMETERS - {"signature_name", "timeout"}
    if unknown:
        raise InvalidInputError(
            f"unknown request parameters {sorted(unknown)}; modelserve reads signature_name "
            "and timeout (microseconds)"
        )
    if not request.inputs:
        raise InvalidInputError("the request has no inputs")
    names = []
    for output in request.outputs:
        if output.parameters:
            raise InvalidInputError(
                f"output {output.name!r}: parameters {sorted(output.parameters)} are not "
                "supported (modelserve answers the output's tensor as it is)"
            )
        names.append(output.name)
    raw = len(request.raw_input_contents) > 0
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(request.raw_input_contents)} entries for "
            f"{len(request.inputs)} inputs: give one per input, in input order, or none"
        )
    return InferEnvelope(signature_name, names, raw, timeout_ms)


def _string_parameter(parameter: service_pb2.InferParameter, name: str) -> str:
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInputError(f"parameter {name!r} must be a string_param")
    value: str = parameter.string_param
    return value


def _int_parameter(parameter: service_pb2.InferParameter, name: str) -> int:
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidInputError(f"parameter {name!r} must be an int64_param, got {kind}")
    value: int = getattr(parameter, kind)
    if value < 0:
        raise InvalidInputError(f"parameter {name!r} must not be negative")
    return value


def declared_rows(request: service_pb2.ModelInferRequest) -> int:
    """The most rows (first dimension) any input declares, before anything is decoded."""
    return max((tensor.shape[0] for tensor in request.inputs if tensor.shape), default=0)


def decode_inputs(
    request: service_pb2.ModelInferRequest, signature: Signature, raw: bool
) -> dict[str, np.ndarray]:
    names = [tensor.name for tensor in request.inputs]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInputError(f"inputs {twice} are given more than once")
    check_names(signature, names)
    arrays = {}
    for index, tensor in enumerate(request.inputs):
        data = request.raw_input_contents[index] if raw else None
        arrays[tensor.name] = _decode_tensor(tensor, signature, data)
    return arrays


def _decode_tensor(
    tensor: service_pb2.ModelInferRequest.InferInputTensor,
    signature: Signature,
    raw: bytes | None,
) -> np.ndarray:
    what = f"input {tensor.name!r}"
    spec = signature.inputs[tensor.name]
    try:
        dtype = from_v2_name(tensor.datatype)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what}: {exc.message}") from None
    if dtype != spec.dtype:
        raise InvalidInputError(
            f"{what}: datatype {tensor.datatype} does not match the model's {spec.dtype.v2_name}"
        )
    shape = list(tensor.shape)
    if any(size < 0 for size in shape):
        raise InvalidInputError(f"{what}: negative dimension in shape {shape}")
    filled = [field.name for field, _ in tensor.contents.ListFields()]
    if raw is not None:
        if filled:
            raise InvalidInputError(
                f"{what}: has both contents.{filled[0]} and raw_input_contents; a request "
                "sends all its inputs one way"
            )
        return raw_tensors.decode(raw, dtype, shape, what, "its raw_input_contents entry")
    return _typed(tensor, dtype.v2_name, dtype.numpy, shape, filled, what)


def _typed(
    tensor: service_pb2.ModelInferRequest.InferInputTensor,
    datatype: str,
    numpy_type: np.dtype,
    shape: list[int],
    filled: list[str],
    what: str,
) -> np.ndarray:
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise InvalidInputError(f"{what}: {datatype} tensors travel in raw_input_contents only")
    others = [name for name in filled if name != field]
    if others:
        raise InvalidInputError(
            f"{what}: a {datatype} tensor's values go in contents.{field}, not {others[0]}"
        )
    values: Sequence[Any] = getattr(tensor.contents, field)
    elements = math.prod(shape)
    if len(values) != elements:
        raise InvalidInputError(
            f"{what}: shape {shape} holds {elements} elements but contents.{field} has "
            f"{len(values)}"
        )
    if datatype == "BYTES":
        return object_array(list(values)).reshape(shape)
    array: np.ndarray = np.array(values, dtype=_WIDE[field])
    if array.dtype != numpy_type:  # INT8, INT16, UINT8 and UINT16 travel in 32-bit fields
        narrow = array.astype(numpy_type)
        if not np.array_equal(narrow, array):
            raise InvalidInputError(f"{what}: a value is out of range for {datatype}")
        array = narrow
    return array.reshape(shape)


_WIDE = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}


def encode_response(
    request: service_pb2.ModelInferRequest,
    outputs: dict[str, np.ndarray],
    model: str,
    version: int,
    raw: bool,
) -> service_pb2.ModelInferResponse:
    datatypes = {name: _v2_datatype(array) for name, array in outputs.items()}
    raw = raw or any(datatype not in CONTENTS_FIELDS for datatype in datatypes.values())
    response = service_pb2.ModelInferResponse(
        model_name=model, model_version=str(version), id=request.id
    )
    for name, array in outputs.items():
        tensor = response.outputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        if raw:
            response.raw_output_contents.append(raw_tensors.encode(array))
        else:
            field = getattr(tensor.contents, CONTENTS_FIELDS[datatypes[name]])
            values = array.reshape(-1).tolist()
            if datatypes[name] == "BYTES":
                values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
            field.extend(values)
    return response


def _v2_datatype(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    datatype = _V2_DATATYPES.get(array.dtype)
    if datatype is None:
        raise ModelFailureError(f"output dtype {array.dtype} has no V2 datatype")
    return datatype
