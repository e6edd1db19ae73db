"""The one check of a request against a signature, whatever the protocol: input names, dtypes,
shapes, an empty batch, and the outputs asked for. Codecs call `check_names` before decoding (by
the named input's dtype); `Call.predict` runs `check_call`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from service.core.signatures import Shape, Signature, TensorInfo
from service.errors import InvalidInputError


def check_names(signature: Signature, given: Iterable[str], where: str = "") -> None:
    """400 naming the missing and unknown inputs, and the ones the signature takes."""
    expected, sent = set(signature.inputs), set(given)
    missing, unknown = sorted(expected - sent), sorted(sent - expected)
    if not (missing or unknown):
        return
    problems = [f"missing input(s) {missing}"] if missing else []
    problems += [f"unknown input(s) {unknown}"] if unknown else []
    prefix = f"{where}: " if where else ""
    raise InvalidInputError(
        f"{prefix}{' and '.join(problems)}; signature {signature.name!r} takes {sorted(expected)}"
    )


def check_outputs(signature: Signature, wanted: Iterable[str], field: str = "outputs") -> None:
    unknown = sorted(set(wanted) - set(signature.outputs))
    if unknown:
        raise InvalidInputError(
            f"unknown output(s) {unknown} in {field}; signature {signature.name!r} has "
            f"{sorted(signature.outputs)}"
        )


def check_call(
    signature: Signature, inputs: Mapping[str, np.ndarray], outputs: Iterable[str] = ()
) -> None:
    check_names(signature, inputs)
    check_outputs(signature, outputs)
    for name, array in inputs.items():
        check_input(array, signature.inputs[name], what=f"input {name!r}")


def check_input(array: np.ndarray, spec: TensorInfo, *, what: str) -> None:
    if array.dtype != spec.dtype.numpy:
        raise InvalidInputError(f"{what}: expected dtype {spec.dtype.tf_name}, got {array.dtype}")
    check_shape(array, spec, what=what)
    # a model computes nothing useful on no rows, and its kernels fail on the empty dimension
    # with messages about internal tensors
    batched = spec.shape is None or (spec.shape and spec.shape[0] is None)
    if batched and array.ndim and array.shape[0] == 0:
        raise InvalidInputError(f"{what} is an empty batch (0 rows): send at least one instance")


def check_shape(array: np.ndarray, spec: TensorInfo, *, what: str) -> None:
    """400 unless the array's shape fits the signature's (None dimensions match any size)."""
    if not shape_fits(array.shape, spec.shape):
        raise InvalidInputError(
            f"{what}: expected shape {spec.shape_text()}, got {list(array.shape)}"
        )


def shape_fits(shape: tuple[int, ...], expected: Shape) -> bool:
    if expected is None:
        return True
    return len(shape) == len(expected) and all(
        want is None or want == got for got, want in zip(shape, expected, strict=True)
    )
