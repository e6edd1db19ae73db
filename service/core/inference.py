"""The one path from a decoded request to a model's outputs, for every protocol: an adapter
admits the request (`async with core.admit(ref, record) as call`), decodes its body against
`call.signature(name)` and awaits `call.predict(...)` on the version it was admitted to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.core import classify_regress
from service.core.batching import deadline_from
from service.core.dtypes import Arrays
from service.core.record import RequestRecord
from service.core.routing import Servable
from service.core.signatures import DEFAULT_SIGNATURE, Signature
from service.core.validation import check_call
from service.errors import InvalidInputError, ServingError


def parse_version(text: str) -> int:
    """A positive integer, in ASCII digits and not thousands of them: int() refuses both "²"
    (a digit to str.isdigit) and over 4,300 digits."""
    if not (text.isascii() and text.isdigit() and len(text) <= 100) or int(text) < 1:
        raise InvalidInputError(f"version must be a positive integer, got {text[:100]!r}")
    return int(text)


@dataclass(frozen=True)
class ModelRef:
    """What a request addresses: a model, and a version or a label (else the newest)."""

    model: str
    version: int | None = None
    label: str | None = None


class Repository(Protocol):
    """The models as routing sees them: `ModelRepository` in the process that holds them,
    `service.processes.link.RepositoryMirror` in a front-end worker."""

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> Servable: ...
    def statuses(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> Sequence[Servable]: ...
    def model_names(self) -> list[str]: ...
    def readiness(self) -> dict[str, bool]: ...
    def is_ready(self) -> bool: ...
    async def refresh(self) -> None:
        """Brings the versions' counters (serving_details) up to date."""


@dataclass(eq=False)
class Call:
    """One admitted request's model version, held (an unload waits) while the block runs."""

    servable: Servable
    record: RequestRecord

    async def __aenter__(self) -> Call:
        self.servable.enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.servable.leave()

    @property
    def model(self) -> str:
        return self.servable.model

    @property
    def version(self) -> int:
        return self.servable.version

    def signature(self, name: str = "") -> Signature:
        """The named signature (the default one for ""); 400 naming the others if unknown."""
        return self.servable.signature(name or DEFAULT_SIGNATURE)

    def check_rows(self, signature: str, rows: int) -> None:
        """400 for more rows than the signature's batcher admits, before values are decoded."""
        self.servable.batcher(signature).check_rows(rows)

    async def predict(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] = (),
        timeout_ms: float | None = None,
    ) -> Arrays:
        """The signature's `outputs` (all when empty) on validated inputs, through its batcher."""
        check_call(self.signature(signature), inputs, outputs)
        deadline = deadline_from(timeout_ms, self.servable.config.batching.timeout_ms)
        batcher = self.servable.batcher(signature)
        results = await batcher.submit(dict(inputs), deadline, outputs, self.record)
        return {key: results[key] for key in outputs} if outputs else results

    def example_signature(
        self, name: str, method: classify_regress.Method
    ) -> classify_regress.ExampleSignature:
        """The signature serving Classify or Regress (400 / 501 when there is none)."""
        return classify_regress.example_signature(self.servable, name or DEFAULT_SIGNATURE, method)

    async def run_examples(
        self,
        target: classify_regress.ExampleSignature,
        serialized: np.ndarray,
        timeout_ms: float | None = None,
    ) -> Arrays:
        """Serialized tf.Examples through a Classify/Regress signature's batcher (429: full)."""
        name = target.signature.name
        self.servable.batcher(name).check_capacity()
        return await self.predict(name, {target.input_name: serialized}, target.outputs, timeout_ms)


@dataclass(eq=False)
class InferenceCore:
    """The only code that resolves what a request addresses (one per server)."""

    repository: Repository

    def admit(
        self, ref: ModelRef, record: RequestRecord, *, method: classify_regress.Method | None = None
    ) -> Call:
        """Admits a request before its body is read: 404 for an unknown model, version or label,
        503 while it is not ready, 429 when its queue is full (predict), 501 when the version
        serves no `method` (whose signature's own queue is checked once it is known)."""
        servable = self.resolve(ref, record)
        if method is None:
            servable.check_capacity()
        else:
            classify_regress.capable_signatures(servable, method)
        return Call(servable, record)

    def resolve(self, ref: ModelRef, record: RequestRecord) -> Servable:
        """The AVAILABLE version `ref` addresses (metadata), noted on the request's record."""
        try:
            servable = self.repository.resolve(ref.model, ref.version, ref.label)
        except ServingError:
            self._note_served(ref.model, record)
            raise
        record.model, record.version = servable.model, servable.version
        return servable

    def statuses(self, ref: ModelRef, record: RequestRecord) -> Sequence[Servable]:
        """Every version of the model, or the one `ref` addresses (status routes)."""
        try:
            versions = self.repository.statuses(ref.model, ref.version, ref.label)
        except ServingError:
            self._note_served(ref.model, record)
            raise
        record.model = ref.model  # a served model: statuses 404s otherwise
        return versions

    def _note_served(self, model: str, record: RequestRecord) -> None:
        """A refused request's model, if served (e.g. an unknown version): only served names
        become metric labels, so their number stays bounded."""
        if model in self.repository.model_names():
            record.model = model
