"""The one table of tensor element types: TensorFlow's DataType name, numpy, and the Open
Inference Protocol (V2) datatype. Anything not in the table is unsupported, and says so."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from service.errors import InvalidInputError

Arrays = dict[str, np.ndarray]  # named tensors: a request's inputs or a model's outputs


@dataclass(frozen=True)
class DType:
    tf_name: str  # TF Serving's JSON spelling, e.g. "DT_FLOAT"
    v2_name: str  # Open Inference Protocol datatype, e.g. "FP32"
    numpy: np.dtype  # strings are numpy object arrays holding bytes

    @property
    def is_string(self) -> bool:
        return self.tf_name == "DT_STRING"

    @property
    def is_bool(self) -> bool:
        return self.tf_name == "DT_BOOL"

    @property
    def is_integer(self) -> bool:
        return self.numpy.kind in "iu"

    @property
    def is_float(self) -> bool:
        return not (self.is_string or self.is_bool or self.is_integer)


DTYPES: tuple[DType, ...] = (
    DType("DT_BOOL", "BOOL", np.dtype(np.bool_)),
    DType("DT_UINT8", "UINT8", np.dtype(np.uint8)),
    DType("DT_UINT16", "UINT16", np.dtype(np.uint16)),
    DType("DT_UINT32", "UINT32", np.dtype(np.uint32)),
    DType("DT_UINT64", "UINT64", np.dtype(np.uint64)),
    DType("DT_INT8", "INT8", np.dtype(np.int8)),
    DType("DT_INT16", "INT16", np.dtype(np.int16)),
    DType("DT_INT32", "INT32", np.dtype(np.int32)),
    DType("DT_INT64", "INT64", np.dtype(np.int64)),
    DType("DT_HALF", "FP16", np.dtype(np.float16)),
    DType("DT_FLOAT", "FP32", np.dtype(np.float32)),
    DType("DT_DOUBLE", "FP64", np.dtype(np.float64)),
    DType("DT_BFLOAT16", "BF16", np.dtype(ml_dtypes.bfloat16)),
    DType("DT_STRING", "BYTES", np.dtype(object)),
)
BY_TF_NAME = {d.tf_name: d for d in DTYPES}
BY_V2_NAME = {d.v2_name: d for d in DTYPES}


def from_tf_name(name: str) -> DType:
    """A model using any other SignatureDef dtype cannot be served."""
    try:
        return BY_TF_NAME[name]
    except KeyError:
        raise ValueError(f"tensor type {name} is not supported by modelserve") from None


def from_v2_name(name: str) -> DType:
    """400 for a V2 request datatype that is not one of the protocol's names."""
    try:
        return BY_V2_NAME[name]
    except KeyError:
        valid = ", ".join(BY_V2_NAME)
        raise InvalidInputError(f"unknown datatype {name!r}; valid datatypes: {valid}") from None
