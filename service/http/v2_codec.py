"""Open Inference Protocol (KServe V2) JSON tensors <-> numpy. A request tensor's `data` is
flat (row-major) or nested, holds exactly prod(shape) elements and has the input's own datatype
(no silent casts: FP64 for an FP32 input is a 400 naming both). Answers are flat row-major."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.dtypes import DTYPES, from_v2_name
from service.core.signatures import DEFAULT_SIGNATURE, Signature
from service.core.tensors import decode_tensor
from service.core.validation import check_names
from service.errors import InvalidInputError, ModelFailureError
from service.http.json_io import json_array

_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
_TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}
_V2_DATATYPES = {entry.numpy: entry.v2_name for entry in DTYPES}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    signature_name: str
    tensors: list[dict[str, Any]]
    output_names: list[str]
    booleans_possible: bool


def parse_infer_request(body: Any, *, booleans_possible: bool = True) -> InferRequest:
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object with an 'inputs' list")
    unknown = set(body) - _REQUEST_KEYS
    if unknown:
        raise InvalidInputError(
            f"unknown request keys {sorted(unknown)}; allowed: {sorted(_REQUEST_KEYS)}"
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
    return InferRequest(request_id, signature_name, tensors, names, booleans_possible)


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
    return {
        name: _decode_tensor(tensor, signature, name, request.booleans_possible)
        for name, tensor in zip(names, request.tensors, strict=True)
    }


def _decode_tensor(
    tensor: dict[str, Any], signature: Signature, name: str, booleans_possible: bool
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
    if "data" not in tensor:
        raise InvalidInputError(f"{what}: 'data' is missing")
    flat = decode_tensor(
        tensor["data"], spec, what=what, allow_b64=False, booleans_possible=booleans_possible
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
) -> dict[str, Any]:
    answer: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = [
        {
            "name": name,
            "datatype": _v2_datatype(array),
            "shape": list(array.shape),
            "data": json_array(array.reshape(-1)),
        }
        for name, array in outputs.items()
    ]
    return answer


def _v2_datatype(array: np.ndarray) -> str:
    datatype = _V2_DATATYPES.get(array.dtype)
    if datatype is None:
        raise ModelFailureError(f"output dtype {array.dtype} has no V2 datatype")
    return datatype
