"""Signatures of a SavedModel, read from its `saved_model.pb` (the SignatureDefs TF Serving
publishes), so metadata answers are exactly what stock TF Serving would show."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from service.core.dtypes import DType, from_tf_name
from service.errors import InvalidInputError

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
# Internal to SavedModel (runs the table initialisers); not a callable serving signature.
INIT_OP_SIGNATURE = "__saved_model_init_op"

Shape = tuple[int | None, ...] | None  # None: unknown rank; a None dimension: any size


@dataclass(frozen=True)
class TensorInfo:
    name: str  # the key clients use ("image", "probabilities")
    dtype: DType
    shape: Shape

    def shape_text(self) -> str:
        """A shape the way error messages show it: [-1, 28, 28, 1] (-1: any size)."""
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"

    def v2_shape(self) -> list[int]:
        return [-1 if d is None else d for d in self.shape or ()]


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    definition: meta_graph_pb2.SignatureDef

    def as_json(self) -> dict[str, Any]:
        """The SignatureDef as protobuf JSON, field names and defaults as TF Serving prints them."""
        as_dict: dict[str, Any] = MessageToDict(
            self.definition,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        return as_dict


def named_signature(
    signatures: Mapping[str, Signature], name: str, model: str, version: int
) -> Signature:
    """`signatures[name]`; 400 naming the others when there is none."""
    try:
        return signatures[name]
    except KeyError:
        known = ", ".join(signatures) or "none"
        raise InvalidInputError(
            f"model {model} version {version} has no signature {name!r}; signatures: {known}"
        ) from None


def read_signatures(version_dir: Path) -> dict[str, Signature]:
    """Every serving signature of the `serve` meta graph, keyed by name."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    graphs = [g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise ValueError(f"{version_dir} has no meta graph tagged 'serve'")
    return signatures_from_defs(graphs[0].signature_def)


def signatures_from_defs(
    definitions: Mapping[str, meta_graph_pb2.SignatureDef],
) -> dict[str, Signature]:
    """Serving signatures from SignatureDefs (a SavedModel's, or a backend's metadata)."""
    return {
        name: Signature(
            name=name,
            method_name=definition.method_name,
            inputs={key: _tensor(key, info) for key, info in sorted(definition.inputs.items())},
            outputs={key: _tensor(key, info) for key, info in sorted(definition.outputs.items())},
            definition=definition,
        )
        for name, definition in sorted(definitions.items())
        if name != INIT_OP_SIGNATURE
    }


def _tensor(key: str, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape_proto = info.tensor_shape
    shape: Shape = (
        None
        if shape_proto.unknown_rank
        else tuple(None if dim.size < 0 else int(dim.size) for dim in shape_proto.dim)
    )
    return TensorInfo(key, from_tf_name(types_pb2.DataType.Name(info.dtype)), shape)
