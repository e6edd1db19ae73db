"""Exporting a trained Keras model as a versioned SavedModel in TF Serving's layout.

`models/<name>/<version>/` holds `saved_model.pb`, `variables/`, `assets/labels.txt` and
`assets.extra/` (model card, plots). A version is written under a hidden temporary name in the
same folder and renamed into place only when complete, so a server polling the folder never
sees a half-written version (TF Serving and modelserve ignore names that are not integers).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tensorflow as tf

from service.core.layout import EXTRA_DIR, LABELS_FILE, MODEL_CARD_FILE, existing_versions
from training.options import TrainOptions
from training.plots import History, plot_training_curves

log = logging.getLogger(__name__)

# A hidden staging (".N.partial-*") or removal (".N.removing-*") folder left this long unchanged
# has no live writer: its export or prune was killed outright (SIGKILL, the OOM killer), which
# leaves no chance to remove it. Exports write for minutes at most; a day leaves a wide margin
# for another process exporting into the same (shared) folder.
STALE_LEFTOVER_SECONDS = 24 * 3600
_LEFTOVER = re.compile(r"\.\d+\.(partial|removing)-[0-9a-f]{8}")  # the names _hidden gives

# Measures the exported SavedModel (loaded back from its temporary folder) and returns the
# metrics for the model card, so the card describes the artifact that ships. Its second
# argument is the version's assets.extra/ folder, where it writes its plots.
Evaluator = Callable[[Any, Path], Mapping[str, Any]]


@dataclass
class ExportRequest:
    """Everything needed to write one model version."""

    name: str
    model: Any  # what the serving functions use: a Keras model or layer, or a list of them
    serving_fn: Any  # a tf.function with an input_signature, exported as serving_default
    labels: list[str]  # written to assets/labels.txt, one per line, in output order
    card: dict[str, Any]
    evaluate: Evaluator | None = None
    other_signatures: dict[str, Any] = field(default_factory=dict)  # name -> tf.function
    other_assets: list[Path] = field(default_factory=list)  # copied into assets/ by file name


def next_version(model_dir: Path) -> int:
    """One more than the newest version on disk (1 for a new model)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def export_model(
    request: ExportRequest,
    base_path: Path,
    keep_versions: int | None,
    model_dir: Path | None = None,
) -> Path:
    """Write `request` as the next version of its model and return the version folder.

    The versions go to `model_dir`, by default <base_path>/<name>. `keep_versions` caps how
    many versions stay on disk (oldest removed first); None keeps all.
    """
    if keep_versions is not None and keep_versions < 1:
        raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
    model_dir = model_dir or base_path / request.name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(model_dir)
    version = next_version(model_dir)
    staging = _hidden(model_dir, version, "partial")
    try:
        _write_saved_model(request, staging)
        extra = staging / EXTRA_DIR
        extra.mkdir()
        loaded = tf.saved_model.load(str(staging))
        metrics = dict(request.evaluate(loaded, extra)) if request.evaluate else {}
        _write_model_card(request, extra, version, metrics, signature_summaries(loaded))
        final = model_dir / str(version)
        if final.exists():  # another export took this number meanwhile: never overwrite it
            raise FileExistsError(f"{final} appeared while exporting; not overwriting it")
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if keep_versions is not None:
        prune_versions(model_dir, keep_versions)
    return final


def _hidden(model_dir: Path, version: int, purpose: str) -> Path:
    """A unique hidden folder for `version` while it is written or removed (servers ignore
    names that are not numbers); `remove_stale_leftovers` knows these names."""
    return model_dir / f".{version}.{purpose}-{uuid.uuid4().hex[:8]}"


def remove_stale_leftovers(model_dir: Path) -> None:
    """Removes the hidden folders killed exports and prunes left in `model_dir` (unchanged
    for STALE_LEFTOVER_SECONDS). Servers ignore them, but each holds a SavedModel's worth of
    disk."""
    for path in model_dir.iterdir():
        if not _LEFTOVER.fullmatch(path.name):
            continue
        try:
            info = path.stat()
        except FileNotFoundError:  # another export removed it meanwhile
            continue
        stale = time.time() - info.st_mtime >= STALE_LEFTOVER_SECONDS
        if stale and stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)  # another export may be removing it too
            log.info("removed %s: left by an export or prune that was killed", path)


def export_trained(
    request: ExportRequest,
    options: TrainOptions,
    history: History | Sequence[History],
    title: str,
) -> Path:
    """A training job's export: the next version under options.output, keeping
    options.keep_versions, with the Keras fit `history` (or one per ensemble member) plotted
    (titled `title`) to assets.extra/training_curves.png beside what `request.evaluate`
    writes."""
    evaluate = request.evaluate

    def plot_and_evaluate(loaded: Any, extra: Path) -> Mapping[str, Any]:
        plot_training_curves(history, extra / "training_curves.png", title)
        return evaluate(loaded, extra) if evaluate else {}

    request = replace(request, evaluate=plot_and_evaluate)
    return export_model(request, options.output, options.keep_versions)


def prune_versions(model_dir: Path, keep: int) -> list[int]:
    """Remove all but the newest `keep` versions; returns the removed version numbers.

    A version is first renamed to a hidden name, then deleted, so it disappears atomically.
    """
    doomed = existing_versions(model_dir)[:-keep]
    for version in doomed:
        hidden = _hidden(model_dir, version, "removing")
        (model_dir / str(version)).rename(hidden)
        shutil.rmtree(hidden)
    return doomed


def signature_summaries(loaded: Any) -> dict[str, Any]:
    """Every signature of a loaded SavedModel: inputs and outputs as name -> {dtype, shape}."""

    def describe(spec: tf.TensorSpec) -> dict[str, Any]:
        return {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}

    summaries = {}
    for signature_name, concrete in loaded.signatures.items():
        _, input_specs = concrete.structured_input_signature
        summaries[signature_name] = {
            "inputs": {name: describe(spec) for name, spec in input_specs.items()},
            "outputs": {name: describe(spec) for name, spec in concrete.structured_outputs.items()},
        }
    return summaries


def _write_saved_model(request: ExportRequest, target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = Path(scratch) / LABELS_FILE
        labels_path.write_text("\n".join(request.labels) + "\n", encoding="utf-8")
        root = tf.Module()
        parts = request.model if isinstance(request.model, list) else [request.model]
        root.state = [_serving_state(part) for part in parts]
        # Tracked as assets, these files are copied into assets/ and ship with the model.
        root.assets = [
            tf.saved_model.Asset(str(path)) for path in [labels_path, *request.other_assets]
        ]
        signatures = {"serving_default": request.serving_fn, **request.other_signatures}
        tf.saved_model.save(root, str(target), signatures=signatures)


def _serving_state(part: Any) -> Any:
    """What must be saved of `part` to serve it.

    A compiled Keras model tracks its optimizer, whose slot variables (twice the weights, for
    Adam) would otherwise be saved into a model that only ever serves: keep its weights only.
    """
    if getattr(part, "optimizer", None) is not None:
        return list(part.weights)
    return part


def _write_model_card(
    request: ExportRequest,
    extra: Path,
    version: int,
    metrics: Mapping[str, Any],
    signatures: dict[str, Any],
) -> None:
    card = {
        **request.card,
        "name": request.name,
        "version": version,
        "labels": request.labels,
        "signatures": signatures,
        "metrics": {**request.card.get("metrics", {}), **metrics},
    }
    (extra / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
