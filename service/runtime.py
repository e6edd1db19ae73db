"""One SavedModel version in memory: load, warm up, run a signature on numpy arrays.

Everything here is synchronous and blocking; callers run it in a thread pool, never on the
event loop. This module knows TensorFlow and numpy, nothing of HTTP or JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from service.errors import InvalidInputError, ModelFailureError, NotFoundError
from service.signatures import Signature, read_signatures

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class LoadedModel:
    """A loaded SavedModel version and its callable signatures."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signatures: dict[str, Signature] = read_signatures(path)
        self._saved_model: Any = tf.saved_model.load(str(path), tags=["serve"])
        self._functions = {
            key: self._saved_model.signatures[key]
            for key in self.signatures
            if key in self._saved_model.signatures
        }
        missing = set(self.signatures) - set(self._functions)
        if missing:
            raise ValueError(f"signatures {sorted(missing)} are declared but not loadable")

    def signature(self, name: str) -> Signature:
        try:
            return self.signatures[name]
        except KeyError:
            known = ", ".join(self.signatures) or "none"
            raise InvalidInputError(
                f"model {self.name} version {self.version} has no signature {name!r}; "
                f"signatures: {known}"
            ) from None

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()
    ) -> Arrays:
        """Runs one signature; `outputs` selects outputs (all when empty). Inputs are validated
        by the protocol layer; TensorFlow's own complaints about values still become 400s."""
        if signature_name not in self._functions:
            raise NotFoundError(f"model {self.name} has no signature {signature_name!r}")
        function = self._functions[signature_name]
        try:
            results = function(**{key: tf.constant(value) for key, value in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"model {self.name} rejected the input: {error_summary(exc)}"
            ) from exc
        except tf.errors.OpError as exc:
            raise ModelFailureError(f"model {self.name} failed: {error_summary(exc)}") from exc
        wanted = outputs or list(results)
        return {key: results[key].numpy() for key in wanted}

    def warm_up(self) -> float:
        """Calls every signature once on synthesized inputs (batch of one, zeros / empty
        strings), so the first real request does not pay for tracing and lazy initialisation.

        A signature whose inputs include strings may legitimately reject empty strings (an image
        decoder, say): that is logged, not fatal. A numeric signature that fails is a broken
        model, and the error propagates so the version is reported as failed.
        Returns the seconds spent.
        """
        start = time.perf_counter()
        for signature in self.signatures.values():
            sample = {
                key: _synthesize(info.shape, info.dtype.numpy, info.dtype.is_string)
                for key, info in signature.inputs.items()
            }
            try:
                self.run(signature.name, sample)
            except InvalidInputError as exc:
                if not any(info.dtype.is_string for info in signature.inputs.values()):
                    raise ValueError(
                        f"warm-up of signature {signature.name!r} on synthesized zeros failed: "
                        f"{exc.message}"
                    ) from exc
                log.info(
                    "warm-up of %s v%d signature %s skipped: synthesized strings rejected (%s)",
                    self.name,
                    self.version,
                    signature.name,
                    exc.message,
                )
        return time.perf_counter() - start


def _synthesize(
    shape: tuple[int | None, ...] | None, dtype: np.dtype, is_string: bool
) -> np.ndarray:
    concrete = (1,) if shape is None else tuple(1 if d is None else d for d in shape)
    if is_string:
        return np.full(concrete, b"", dtype=object)
    return np.zeros(concrete, dtype=dtype)


_TF_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[")


def error_summary(exc: Exception) -> str:
    """The line of a TensorFlow error that says what failed, without its graph context
    ("Graph execution error:", "Detected at node ...", "[[{{node ...}}]]")."""
    lines = str(getattr(exc, "message", None) or exc).splitlines()
    useful = [
        line.strip() for line in lines if line.strip() and not line.strip().startswith(_TF_NOISE)
    ]
    return useful[0] if useful else type(exc).__name__
