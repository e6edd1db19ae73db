"""TF Serving's REST predict format <-> numpy (https://www.tensorflow.org/tfx/serving/api_rest).

Row format: `instances`, one entry per example (an {input: value} object when there are several
inputs). Columnar: `inputs`, a tensor or an {input: tensor} object. Answers mirror the request
(`predictions` rows, objects when there are several outputs; or `outputs`). Binary strings
travel as {"b64": "..."}, as do string outputs whose name ends in `_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.signatures import DEFAULT_SIGNATURE, Signature
from service.core.tensors import decode_tensor
from service.core.validation import check_names
from service.errors import InvalidInputError
from service.http.json_io import json_array


@dataclass(frozen=True)
class PredictRequest:
    signature_name: str
    body: dict[str, Any]
    booleans_possible: bool
    # read from the body at once: answers are encoded after the body has been freed
    row_format: bool
    rows: int


def parse_predict_request(body: Any, *, booleans_possible: bool = True) -> PredictRequest:
    """Checks the envelope; the tensors are decoded once the signature is known."""
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object with 'instances' or 'inputs'")
    signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature_name, str):
        raise InvalidInputError("'signature_name' must be a string")
    signature_name = signature_name or DEFAULT_SIGNATURE
    if ("instances" in body) == ("inputs" in body):
        raise InvalidInputError(
            "request must have exactly one of 'instances' (row format) or 'inputs' (columnar)"
        )
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise InvalidInputError(
            f"unknown request keys {sorted(unknown)}; expected 'signature_name' and "
            "'instances' or 'inputs'"
        )
    instances = body.get("instances")
    rows = len(instances) if isinstance(instances, list) else 0
    return PredictRequest(signature_name, body, booleans_possible, "instances" in body, rows)


def decode_inputs(request: PredictRequest, signature: Signature) -> dict[str, np.ndarray]:
    if request.row_format:
        columns = _rows_to_columns(request.body["instances"], signature)
    else:
        columns = _named_columns(request.body["inputs"], signature)
    return {
        name: decode_tensor(
            value,
            signature.inputs[name],
            what=f"input {name!r}",
            allow_b64=True,
            booleans_possible=request.booleans_possible,
        )
        for name, value in columns.items()
    }


def _rows_to_columns(instances: Any, signature: Signature) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError("'instances' must be a non-empty list (one entry per example)")
    names = list(signature.inputs)
    if len(names) == 1 and not all(_is_named_object(item) for item in instances):
        return {names[0]: instances}
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise InvalidInputError(
                f"instances[{index}]: the signature has inputs {sorted(names)}, so every "
                "instance must be an object keyed by input name"
            )
        check_names(signature, item, where=f"instances[{index}]")
    return {name: [item[name] for item in instances] for name in names}


def _named_columns(inputs: Any, signature: Signature) -> dict[str, Any]:
    if _is_named_object(inputs):
        check_names(signature, inputs, where="'inputs'")
        return {name: inputs[name] for name in signature.inputs}
    if len(signature.inputs) != 1:
        raise InvalidInputError(
            f"the signature has inputs {sorted(signature.inputs)}: 'inputs' must be an object "
            "keyed by input name"
        )
    (name,) = signature.inputs
    return {name: inputs}


def _is_named_object(value: Any) -> bool:
    """An {input: value} object, as opposed to a {"b64": ...} value."""
    return isinstance(value, dict) and set(value) != {"b64"}


def encode_outputs(
    request: PredictRequest, outputs: dict[str, np.ndarray], batch_size: int
) -> dict[str, Any]:
    """`predictions` for the row format, `outputs` for the columnar one; a single output
    loses its name, as TF Serving does."""
    values = {
        name: json_array(array, binary=name.endswith("_bytes")) for name, array in outputs.items()
    }
    if not request.row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != batch_size:
            raise InvalidInputError(
                f"output {name!r} has shape {list(array.shape)}, which does not have one row per "
                f"instance ({batch_size}); use the columnar 'inputs' format"
            )
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    rows = [{name: value[i] for name, value in values.items()} for i in range(batch_size)]
    return {"predictions": rows}


def row_count(request: PredictRequest) -> int:
    return request.rows
