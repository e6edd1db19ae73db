"""TF Serving's Classify and Regress (REST and gRPC): tf.Example protos in, (label, score) lists
or one value per example out, through the signature's batcher like any predict. A signature
serves them when its method name says so (`tensorflow/serving/classify` or `.../regress`), it
takes one string input (serialized examples) and has TF Serving's outputs: `classes` and/or
`scores` [batch, classes], or `outputs` [batch] or [batch, 1]. REST examples map as in TF
Serving: whole numbers to int64_list, decimals to float_list, strings and {"b64": ...} to
bytes_list; `context` features join every example and may not repeat in one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

from service.core.decoding import object_array
from service.core.routing import Servable
from service.core.signatures import Signature
from service.core.tensors import string_value
from service.errors import InvalidInputError, ModelFailureError, UnimplementedError
from service.grpc.message_split import Strings

Method = Literal["classify", "regress"]
CLASSES, SCORES, REGRESSION_OUTPUTS = "classes", "scores", "outputs"
_INT64_RANGE = (-(2**63), 2**63 - 1)

Classification = list[tuple[str, float]]


@dataclass(frozen=True)
class ExampleSignature:
    signature: Signature
    method: Method
    input_name: str

    @property
    def outputs(self) -> list[str]:
        names = [CLASSES, SCORES] if self.method == "classify" else [REGRESSION_OUTPUTS]
        return [name for name in names if name in self.signature.outputs]


def capable_signatures(servable: Servable, method: Method) -> list[str]:
    """UNIMPLEMENTED when no signature of `servable` serves `method`."""
    wanted = f"tensorflow/serving/{method}"
    capable = sorted(s.name for s in servable.signatures.values() if s.method_name == wanted)
    if not capable:
        methods = sorted({s.method_name for s in servable.signatures.values()})
        raise UnimplementedError(
            f"{method} needs a signature with method {wanted}; model {servable.model!r} "
            f"version {servable.version} has only {methods}. Use predict."
        )
    return capable


def example_signature(servable: Servable, signature_name: str, method: Method) -> ExampleSignature:
    """UNIMPLEMENTED when no signature of the model serves `method`, INVALID_ARGUMENT when
    another one than `signature_name` would; a malformed signature is a model bug."""
    capable = capable_signatures(servable, method)
    signature = servable.signature(signature_name)
    where = f"model {servable.model!r} version {servable.version}"
    if signature.name not in capable:
        raise InvalidInputError(
            f"signature {signature.name!r} of {where} has method {signature.method_name}, not "
            f"tensorflow/serving/{method}; set signature_name to one of {capable}"
        )
    inputs = list(signature.inputs.values())
    if len(inputs) != 1 or not inputs[0].dtype.is_string:
        raise ModelFailureError(
            f"signature {signature.name!r} of {where} must take one string input (serialized "
            f"tf.Example), but takes {[(i.name, i.dtype.tf_name) for i in inputs]}"
        )
    expected = {CLASSES, SCORES} if method == "classify" else {REGRESSION_OUTPUTS}
    if not expected & set(signature.outputs):
        raise ModelFailureError(
            f"signature {signature.name!r} of {where} has outputs {sorted(signature.outputs)}; "
            f"TF Serving reads {sorted(expected)}"
        )
    return ExampleSignature(signature, method, inputs[0].name)


def example_count(request_input: input_pb2.Input, split_examples: Strings | None = None) -> int:
    """How many examples a gRPC `Input` holds (see `serialized_from_proto`)."""
    if split_examples is not None:
        return len(split_examples)
    kind = request_input.WhichOneof("kind")
    return len(getattr(request_input, kind).examples) if kind else 0


def serialized_from_proto(
    request_input: input_pb2.Input, split_examples: Strings | None = None
) -> np.ndarray:
    """The serialized examples of a gRPC `Input` (with its context merged into each: an
    example's own feature wins), or `split_examples`, serialized by the helper process."""
    if split_examples is not None:
        if not len(split_examples):
            raise InvalidInputError("input has no examples")
        return split_examples.array()
    kind = request_input.WhichOneof("kind")  # example_list or example_list_with_context
    if kind is None:
        raise InvalidInputError("input is empty: set input.example_list (or ..._with_context)")
    examples = getattr(request_input, kind).examples
    context = b""
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
    if not examples:
        raise InvalidInputError("input has no examples")
    # concatenated serializations parse as one merged message (map entries: the last wins)
    return object_array([context + example.SerializeToString() for example in examples])


def serialized_from_json(body: Any) -> tuple[str | None, np.ndarray]:
    """(signature_name or None, serialized examples) of a REST body."""
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object with 'examples'")
    unknown = set(body) - {"signature_name", "context", "examples"}
    if unknown:
        raise InvalidInputError(
            f"unknown request keys {sorted(unknown)}; expected 'signature_name', 'context' and "
            "'examples'"
        )
    signature_name = body.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise InvalidInputError("'signature_name' must be a string")
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidInputError("'examples' must be a non-empty list of objects {feature: value}")
    context = _features(body.get("context", {}), "'context'")
    serialized = []
    for index, item in enumerate(examples):
        features = _features(item, f"examples[{index}]")
        repeated = sorted(set(features) & set(context))
        if repeated:
            raise InvalidInputError(
                f"examples[{index}] repeats context features {repeated}; a feature is either "
                "in the context or in the examples"
            )
        example = example_pb2.Example()
        for name, feature in (context | features).items():
            example.features.feature[name].CopyFrom(feature)
        serialized.append(example.SerializeToString())
    return signature_name or None, object_array(serialized)


def _features(value: Any, where: str) -> dict[str, feature_pb2.Feature]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be an object {{feature: value or [values]}}")
    return {name: _feature(item, f"{where} feature {name!r}") for name, item in value.items()}


def _feature(value: Any, where: str) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    kinds = {_kind(item, where) for item in values}
    feature = feature_pb2.Feature()
    if kinds == {"bytes"}:
        feature.bytes_list.value.extend(
            string_value(item, what=where, allow_b64=True) for item in values
        )
    elif kinds == {"int"}:
        if any(not _INT64_RANGE[0] <= item <= _INT64_RANGE[1] for item in values):
            raise InvalidInputError(f"{where}: a whole number beyond int64")
        feature.int64_list.value.extend(values)
    elif kinds <= {"int", "float"} and kinds:
        if any(math.isfinite(float(item)) and abs(float(item)) > 3.4028235e38 for item in values):
            raise InvalidInputError(f"{where}: a number beyond float32 (float_list)")
        feature.float_list.value.extend(float(item) for item in values)
    elif kinds:
        raise InvalidInputError(f"{where}: mixes strings and numbers in one feature")
    return feature  # an empty list: a feature with no values


def _kind(item: Any, where: str) -> str:
    if isinstance(item, bool):
        raise InvalidInputError(f"{where}: true/false is not a feature value; use 1/0")
    if isinstance(item, int):
        return "int"
    if isinstance(item, float):
        return "float"
    if isinstance(item, str) or (isinstance(item, dict) and set(item) == {"b64"}):
        return "bytes"
    raise InvalidInputError(
        f'{where}: values are numbers, strings or {{"b64": ...}}, got {type(item).__name__}'
    )


def classifications(outputs: dict[str, np.ndarray], count: int) -> list[Classification]:
    """Per example, (label, score) per class: labels "" or scores 0 when the model gives only
    the other (as TF Serving fills ClassificationResult)."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    present = [a for a in (classes, scores) if a is not None]
    if any(a.ndim != 2 or a.shape[0] != count for a in present) or (
        classes is not None and scores is not None and classes.shape != scores.shape
    ):
        shapes = {k: list(v.shape) for k, v in outputs.items()}
        raise ModelFailureError(
            f"classification outputs must be [{count}, classes] each; the model gave {shapes}"
        )
    labels = classes if classes is not None else np.full(present[0].shape, "")
    values = scores if scores is not None else np.zeros(present[0].shape)
    return [
        [(_label(label), float(value)) for label, value in zip(label_row, value_row, strict=True)]
        for label_row, value_row in zip(labels, values, strict=True)
    ]


def _label(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def regressions(outputs: dict[str, np.ndarray], count: int) -> list[float]:
    values = outputs[REGRESSION_OUTPUTS]
    if values.shape not in {(count,), (count, 1)}:
        raise ModelFailureError(
            f"regression output must be [{count}] or [{count}, 1]; the model gave "
            f"{list(values.shape)}"
        )
    return [float(v) for v in values.reshape(count)]
