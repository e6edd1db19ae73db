"""Open Inference Protocol (KServe V2) JSON tensors <-> numpy. A request tensor's `data` is
flat (row-major) or nested, holds exactly prod(shape) elements and has the input's own datatype
(no silent casts: FP64 for an FP32 input is a 400 naming both). Answers are flat row-major."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.dtypes import DTYPES, from_v2_name
from service.core.signatures import DEFAULT_SIGNATURE, Signature
from service.core.tensors import decode_tensor
from service.core.validation import check_names
from service.errors import InvalidInputError, ModelFailureError
from service.http import v2_binary
from service.http.json_io import json_array
from service.v2 import raw_tensors

# model_name and model_version: KServe's client repeats the URL's in the body
_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs", "model_name", "model_version"}
_TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
_V2_DATATYPES = {entry.numpy: entry.v2_name for entry in DTYPES}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    signature_name: str
    tensors: list[dict[str, Any]]
    output_names: list[str]
    booleans_possible: bool
    binary_outputs: frozenset[str] = frozenset()  # outputs to answer as binary data
    all_binary: bool = False  # parameters.binary_data_output: every output as binary data
    binary: v2_binary.BinaryInputs = field(default_factory=lambda: v2_binary.BinaryInputs(None))

    def wants_binary(self, output: str) -> bool:
        return self.all_binary or output in self.binary_outputs


def parse_infer_request(
    body: Any,
    *,
    booleans_possible: bool = True,
    model: str | None = None,
    version: int | None = None,
    binary: memoryview | None = None,
) -> InferRequest:
    """The request's envelope checked; `model` and `version` are what the URL resolved to (a
    `model_name` or `model_version` in the body must match them), `binary` the body's bytes
    after its JSON header (binary tensor extension)."""
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object with an 'inputs' list")
    unknown = set(body) - _REQUEST_KEYS
    if unknown:
        raise InvalidInputError(
            f"unknown request keys {sorted(unknown)}; allowed: {sorted(_REQUEST_KEYS)}"
        )
    named = body.get("model_name", model)
    if model is not None and named != model:
        raise InvalidInputError(f"'model_name' is {named!r} but the URL names model {model!r}")
    if version is not None and body.get("model_version", str(version)) != str(version):
        raise InvalidInputError(
            f"'model_version' is {body['model_version']!r} but the request goes to version "
            f"{version}; name the version in the URL: /v2/models/{model}/versions/<v>/infer"
        )
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError("'parameters' must be an object")
    signature_name = parameters.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise InvalidInputError("parameters.signature_name must be a string")
    all_binary = _flag(parameters, "binary_data_output", "parameters")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise InvalidInputError(
                f"inputs[{index}] must be an object with name, shape, datatype, data"
            )
    outputs = body.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list)
        and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise InvalidInputError("'outputs' must be a list of objects with a 'name'")
    names = [o["name"] for o in outputs or []]
    binary_outputs = frozenset(
        o["name"] for o in outputs or [] if _flag(o.get("parameters", {}), "binary_data", o["name"])
    )
    return InferRequest(
        request_id,
        signature_name,
        tensors,
        names,
        booleans_possible,
        binary_outputs,
        all_binary,
        v2_binary.BinaryInputs(binary),
    )


def _flag(parameters: Any, key: str, where: str) -> bool:
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be an object")
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def decode_inputs(request: InferRequest, signature: Signature) -> dict[str, np.ndarray]:
    names: list[str] = []
    for index, tensor in enumerate(request.tensors):
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidInputError(f"inputs[{index}]: 'name' must be a string")
        if name in names:
            raise InvalidInputError(f"input {name!r} is given twice")
        names.append(name)
    check_names(signature, names)
    arrays = {
        name: _decode_tensor(tensor, signature, name, request)
        for name, tensor in zip(names, request.tensors, strict=True)
    }
    request.binary.finish()
    return arrays


def _decode_tensor(
    tensor: dict[str, Any], signature: Signature, name: str, request: InferRequest
) -> np.ndarray:
    what = f"input {name!r}"
    unknown = set(tensor) - _TENSOR_KEYS
    if unknown:
        raise InvalidInputError(f"{what}: unknown keys {sorted(unknown)}")
    spec = signature.inputs[name]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInputError(
            f"{what}: 'datatype' must be a string such as {spec.dtype.v2_name!r}"
        )
    try:
        dtype = from_v2_name(datatype)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what}: {exc.message}") from None
    if dtype != spec.dtype:
        raise InvalidInputError(
            f"{what}: datatype {datatype} does not match the model's {spec.dtype.v2_name}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInputError(
            f"{what}: 'shape' must be a list of non-negative integers, got {shape!r}"
        )
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{what}: 'parameters' must be an object")
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise InvalidInputError(
                f"{what}: has both 'data' and parameters.binary_data_size; send one"
            )
        raw = request.binary.take(parameters["binary_data_size"], what)
        return raw_tensors.decode(raw, spec.dtype, shape, what)
    if "data" not in tensor:
        raise InvalidInputError(f"{what}: 'data' is missing")
    flat = decode_tensor(
        tensor["data"],
        spec,
        what=what,
        allow_b64=False,
        booleans_possible=request.booleans_possible,
    ).reshape(-1)
    if flat.size != math.prod(shape):
        raise InvalidInputError(
            f"{what}: shape {shape} holds {math.prod(shape)} elements but 'data' has {flat.size}"
        )
    try:
        return flat.reshape(shape)
    except ValueError as exc:  # e.g. more dimensions than numpy allows
        raise InvalidInputError(f"{what}: shape {shape} cannot be used: {exc}") from None


def encode_outputs(
    request: InferRequest, outputs: dict[str, np.ndarray], model: str, version: int
) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON answer, and the binary data that follows it (outputs asked for as binary, in
    output order; empty when all are JSON)."""
    answer: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = []
    binary: list[bytes] = []
    for name, array in outputs.items():
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": _v2_datatype(array),
            "shape": list(array.shape),
        }
        if request.wants_binary(name):
            binary.append(raw_tensors.encode(array))
            tensor["parameters"] = {"binary_data_size": len(binary[-1])}
        else:
            tensor["data"] = json_array(array.reshape(-1))
        answer["outputs"].append(tensor)
    return answer, binary


def _v2_datatype(array: np.ndarray) -> str:
    datatype = _V2_DATATYPES.get(array.dtype)
    if datatype is None:
        raise ModelFailureError(f"output dtype {array.dtype} has no V2 datatype")
    return datatype
