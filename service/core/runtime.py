"""One SavedModel version in memory: load, warm up, run a signature on numpy arrays.
Everything here blocks: callers run it on worker threads, never on the event loop."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.core.batching import ModelCall
from service.core.decoding import CHUNK_ITEMS
from service.core.dtypes import Arrays
from service.core.signatures import Shape, Signature, read_signatures
from service.errors import InvalidInputError, ModelFailureError, NotFoundError

log = logging.getLogger(__name__)


class LoadedModel:
    """A loaded SavedModel version on one device, and its callable signatures."""

    def __init__(self, name: str, version: int, path: Path, device: str = "") -> None:
        self.name = name
        self.version = version
        self.path = path
        self.device = device  # e.g. "/device:CPU:0"; "" lets TensorFlow choose
        self.signatures: dict[str, Signature] = read_signatures(path)
        with tf.device(device or None):  # variables live on the instance's device
            self._saved_model: Any = tf.saved_model.load(str(path), tags=["serve"])
        self._functions = {
            key: self._saved_model.signatures[key]
            for key in self.signatures
            if key in self._saved_model.signatures
        }
        missing = set(self.signatures) - set(self._functions)
        if missing:
            raise ValueError(f"signatures {sorted(missing)} are declared but not loadable")

    def run(self, call: ModelCall) -> Arrays:
        """Runs one signature on this instance's device. Inputs are validated by the protocol
        layer; TensorFlow's own complaints about values still become 400s."""
        signature_name = call.signature
        try:
            results = self.call_tensors(signature_name, call.inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            reason = client_reason(error_summary(exc))
            if reason is None:
                self._log_internal(signature_name, exc)
                reason = "a value or a size the model cannot compute with"
            raise InvalidInputError(f"model {self.name} rejected the input: {reason}") from exc
        except tf.errors.OpError as exc:
            self._log_internal(signature_name, exc)
            raise ModelFailureError(
                f"model {self.name} failed while computing the request (a {exc.error_code.name} "
                "error inside the model)"
            ) from exc
        wanted = call.outputs or list(results)
        return {key: results[key].numpy() for key in wanted}

    def _log_internal(self, signature_name: str, exc: Exception) -> None:
        """TensorFlow's own message is for the operator: the client's answer names no internals."""
        where = f"model {self.name} v{self.version} signature {signature_name}"
        log.warning("%s: %s: %s", where, type(exc).__name__, error_summary(exc))

    def call_tensors(
        self, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, tf.Tensor]:
        """The signature's raw output tensors, computed on this instance's device."""
        if signature_name not in self._functions:
            raise NotFoundError(f"model {self.name} has no signature {signature_name!r}")
        function = self._functions[signature_name]
        with tf.device(self.device or None):
            return dict(function(**{key: _tensor(value) for key, value in inputs.items()}))

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> float:
        """Calls every signature at every batch size the batcher will use, on zeros and empty
        strings, so no request pays for tracing; returns the seconds spent. A numeric signature
        that fails is a broken model (the error propagates); one taking strings may rightly
        reject empty ones (an image decoder): logged, not fatal."""
        start = time.perf_counter()
        for signature in self.signatures.values():
            for size in batch_sizes:
                sample = {
                    key: _synthesize(info.shape, info.dtype.numpy, info.dtype.is_string, size)
                    for key, info in signature.inputs.items()
                }
                try:
                    self.run(ModelCall(signature.name, sample))
                except InvalidInputError as exc:
                    # the operator reads this: TensorFlow's whole summary, internals included
                    detail = error_summary(exc.__cause__) if exc.__cause__ else exc.message
                    if not any(info.dtype.is_string for info in signature.inputs.values()):
                        raise ValueError(
                            f"warm-up of signature {signature.name!r} on synthesized zeros "
                            f"failed: {detail}"
                        ) from exc
                    log.info(
                        "warm-up of %s v%d signature %s skipped: synthesized strings rejected (%s)",
                        self.name,
                        self.version,
                        signature.name,
                        detail,
                    )
                    break
        return time.perf_counter() - start


class EchoModel:
    """Benchmark only (`MODELSERVE_ECHO=true`): zeros shaped like the model's outputs, without
    running it, to measure the HTTP/JSON path alone (the protocol ceiling)."""

    def __init__(self, signatures: dict[str, Signature]) -> None:
        self.device = "echo"
        self.signatures = signatures

    def run(self, call: ModelCall) -> Arrays:
        rows = next(iter(call.inputs.values())).shape[0]
        specs = self.signatures[call.signature].outputs
        return {
            key: _synthesize(spec.shape, spec.dtype.numpy, spec.dtype.is_string, rows)
            for key, spec in specs.items()
            if not call.outputs or key in call.outputs
        }


def _tensor(array: np.ndarray) -> tf.Tensor:
    """`tf.constant(array)`, millions of strings a chunk at a time: TensorFlow converts them in
    one call holding the GIL (0.1-0.3 s for 5 M), which the event loop waits for."""
    if array.dtype != object or array.size <= CHUNK_ITEMS:
        return tf.constant(array)
    flat = array.reshape(-1)
    pieces = []
    for start in range(0, flat.size, CHUNK_ITEMS):
        pieces.append(tf.constant(flat[start : start + CHUNK_ITEMS]))
        time.sleep(0)  # the hand-over: see service.core.decoding.checkpoint
    return tf.reshape(tf.concat(pieces, axis=0), array.shape)


def _synthesize(shape: Shape, dtype: np.dtype, is_string: bool, batch_size: int) -> np.ndarray:
    """An input of the signature's shape: batch_size rows (if unknown), 1 for other unknowns."""
    dims = [batch_size] if shape is None else list(shape)
    if dims and dims[0] is None:
        dims[0] = batch_size
    sized = tuple(1 if d is None else d for d in dims)
    return np.full(sized, b"", dtype=object) if is_string else np.zeros(sized, dtype=dtype)


_TF_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[")
# What marks a TensorFlow message as about the model's internals rather than the request: a
# shape ("[64] vs. [0,14,14,32]", "In[0]: [1,3]"), an op or node, tensors, dimensions, indices.
_INTERNALS = re.compile(
    r"\[[\d,\s-]*\]|\bIn\[|shape|dimension|\bdims?\b|tensor|\bnode\b|(?-i:[a-z]Op)\b|\bop\b|matrix"
    r"|indices|\(\w[\w/]*:\d+\)",
    re.IGNORECASE,
)
_ASSERTION = re.compile(r"assertion failed: \[([^\]]+)\]")


def client_reason(summary: str) -> str | None:
    """What a client may read of a model's refusal (`error_summary`): a model's own assertion
    message, or TensorFlow's line when it speaks of the input alone ("Unknown image file
    format"); None when it names internal shapes, ops, tensors, or values of the batch."""
    if summary.startswith("assertion failed:"):
        message = _ASSERTION.match(summary)
        return f"assertion failed: {message[1]}" if message else None
    return None if _INTERNALS.search(summary) else summary


def error_summary(exc: BaseException) -> str:
    """The line of a TensorFlow error that says what failed, without its graph context."""
    lines = str(getattr(exc, "message", None) or exc).splitlines()
    useful = [
        line.strip() for line in lines if line.strip() and not line.strip().startswith(_TF_NOISE)
    ]
    return useful[0] if useful else type(exc).__name__
