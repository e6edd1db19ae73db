"""What a task endpoint needs to know about the version it calls, from its own files (labels,
ImageNet class ids, model card), read once per loaded version, not per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from service.core.layout import read_model_card
from service.core.routing import Servable
from service.core.signatures import Signature
from service.errors import ConflictError

LABELS_FILE = Path("assets") / "labels.txt"
CLASS_INDEX_FILE = Path("assets") / "imagenet_class_index.json"


@dataclass(frozen=True)
class ModelAssets:
    labels: tuple[str, ...]
    class_ids: tuple[str, ...]  # WordNet ids, in label order (ImageNet models only)
    card: dict[str, Any] = field(hash=False, compare=False)

    @property
    def random_weights(self) -> bool:
        return self.card.get("weights") == "random"


def assets_of(servable: Servable) -> ModelAssets:
    """The version's own files; for a model on a remote backend, its configured `assets`."""
    backend = servable.config.backend
    if backend is not None:
        return _read_assets(backend.assets, ()) if backend.assets else ModelAssets((), (), {})
    return _read_assets(servable.path, servable.fingerprint)


@lru_cache(maxsize=64)  # by fingerprint too: a version rewritten in place is read again
def _read_assets(path: Path, fingerprint: tuple[int, ...]) -> ModelAssets:
    labels_path = path / LABELS_FILE
    labels = labels_path.read_text("utf-8").splitlines() if labels_path.is_file() else []
    return ModelAssets(tuple(labels), _class_ids(path / CLASS_INDEX_FILE), read_model_card(path))


def _class_ids(path: Path) -> tuple[str, ...]:
    """Keras' class index: {"0": ["n01440764", "tench"], ...}."""
    if not path.is_file():
        return ()
    index = json.loads(path.read_text("utf-8"))
    return tuple(index[str(i)][0] for i in range(len(index)))


def require_labels(servable: Servable, count: int) -> tuple[str, ...]:
    """The version's labels, which must number `count` (one per output column)."""
    labels = assets_of(servable).labels
    if not labels and servable.config.backend is not None:
        raise ConflictError(
            f"model {servable.model!r} runs on the backend {servable.config.backend.grpc}, "
            "whose labels the gateway cannot read: set `backend.assets` in the serving config "
            "to a local folder with the model's assets/labels.txt"
        )
    if len(labels) != count:
        raise ConflictError(
            f"model {servable.model!r} version {servable.version} has {len(labels)} labels in "
            f"{LABELS_FILE}, expected {count}: it does not look like the model this endpoint "
            "serves"
        )
    return labels


def require_interface(
    servable: Servable, signature_name: str, input_name: str, output_name: str
) -> Signature:
    """The signature a task endpoint calls, which must have the input and output it feeds and
    reads; a model of another shape served under the task's name is a 409, not a 500."""
    signature = servable.signatures.get(signature_name)
    if (
        signature is None
        or input_name not in signature.inputs
        or output_name not in signature.outputs
    ):
        raise ConflictError(
            f"model {servable.model!r} version {servable.version} has no signature "
            f"{signature_name!r} taking {input_name!r} and giving {output_name!r}: it does not "
            "look like the model this endpoint serves"
        )
    return signature
