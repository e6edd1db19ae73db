"""Export: round trip, version numbering, atomic write, version cap, model card."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from service.core.layout import existing_versions, read_model_card
from training.export import (
    STALE_LEFTOVER_SECONDS,
    ExportRequest,
    export_model,
    next_version,
    prune_versions,
)

LABELS = ["a", "b", "c"]


def tiny_request(evaluate: Any = None) -> ExportRequest:
    """A 4 -> 3 softmax model trained for one step, with its serving function."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.ones((8, 4), np.float32), np.arange(8) % 3)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(features, training=False)}

    return ExportRequest(
        name="tiny",
        model=model,
        serving_fn=serve,
        labels=LABELS,
        card={"task": "test", "metrics": {"train_loss": 1.0}},
        evaluate=evaluate,
    )


def test_round_trip_gives_same_outputs_labels_and_card(tmp_path: Path) -> None:
    request = tiny_request(evaluate=lambda loaded, extra: {"measured": 0.5})
    version_dir = export_model(request, tmp_path, keep_versions=None)

    assert version_dir == tmp_path / "tiny" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert (version_dir / "assets" / "labels.txt").read_text().splitlines() == LABELS

    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    loaded = tf.saved_model.load(str(version_dir))
    served = loaded.signatures["serving_default"](features=tf.constant(x))["probabilities"]
    np.testing.assert_allclose(served.numpy(), request.model.predict(x, verbose=0), rtol=1e-6)

    card = read_model_card(version_dir)
    assert card["name"] == "tiny"
    assert card["version"] == 1
    assert card["labels"] == LABELS
    assert card["metrics"] == {"train_loss": 1.0, "measured": 0.5}
    serving = card["signatures"]["serving_default"]
    assert serving["inputs"] == {"features": {"dtype": "float32", "shape": [None, 4]}}
    assert serving["outputs"] == {"probabilities": {"dtype": "float32", "shape": [None, 3]}}


def test_versions_are_numbered_after_the_newest_integer_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny"
    assert next_version(model_dir) == 1
    (model_dir / "7").mkdir(parents=True)
    (model_dir / "not-a-version").mkdir()
    (model_dir / "12.txt").write_text("a file, not a version")
    assert next_version(model_dir) == 8
    assert export_model(tiny_request(), tmp_path, keep_versions=None).name == "8"
    assert export_model(tiny_request(), tmp_path, keep_versions=None).name == "9"
    assert existing_versions(model_dir) == [7, 8, 9]


def test_version_appears_only_when_complete(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def look_while_exporting(loaded: Any, extra: Path) -> dict[str, float]:
        model_dir = tmp_path / "tiny"
        seen["versions"] = existing_versions(model_dir)
        seen["hidden"] = [p.name for p in model_dir.iterdir()]
        return {}

    export_model(tiny_request(look_while_exporting), tmp_path, keep_versions=None)
    assert seen["versions"] == []  # nothing a server would load while writing
    assert len(seen["hidden"]) == 1
    assert seen["hidden"][0].startswith(".1.partial-")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["1"]


def test_failed_export_leaves_no_version_and_no_debris(tmp_path: Path) -> None:
    def fail(loaded: Any, extra: Path) -> dict[str, float]:
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        export_model(tiny_request(fail), tmp_path, keep_versions=None)
    assert list((tmp_path / "tiny").iterdir()) == []


def test_an_export_removes_what_killed_exports_left_but_not_a_live_export(
    tmp_path: Path,
) -> None:
    """A SIGKILLed export (or prune) cannot remove its hidden folder: the next export does,
    once it has been left unchanged for a day, and leaves a younger one (an export running
    now) and hidden folders that are not its own alone."""
    model_dir = tmp_path / "tiny"
    killed, pruned = model_dir / ".3.partial-0123abcd", model_dir / ".2.removing-00ff00ff"
    running, other = model_dir / ".4.partial-89abcdef", model_dir / ".notes"
    for folder in (killed, pruned, running, other):
        (folder / "variables").mkdir(parents=True)
    day_ago = time.time() - STALE_LEFTOVER_SECONDS - 60
    for folder in (killed, pruned, other):
        os.utime(folder, (day_ago, day_ago))
    assert export_model(tiny_request(), tmp_path, keep_versions=None).name == "1"
    assert sorted(p.name for p in model_dir.iterdir()) == [running.name, other.name, "1"]


def test_keep_versions_caps_versions_on_disk(tmp_path: Path) -> None:
    for _ in range(3):
        export_model(tiny_request(), tmp_path, keep_versions=2)
    assert existing_versions(tmp_path / "tiny") == [2, 3]
    assert prune_versions(tmp_path / "tiny", keep=1) == [2]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["3"]
    with pytest.raises(ValueError, match="at least 1"):
        export_model(tiny_request(), tmp_path, keep_versions=0)


def test_model_card_is_valid_json_with_provenance(tmp_path: Path) -> None:
    from training.model_card import provenance

    request = tiny_request()
    request.card.update(provenance(["modelserve", "train", "tiny"]))
    version_dir = export_model(request, tmp_path, keep_versions=None)
    card = json.loads((version_dir / "assets.extra" / "model_card.json").read_text())
    assert card["training_command"] == "modelserve train tiny"
    assert card["framework"]["tensorflow"] == tf.__version__
    assert card["framework"]["keras"] == keras.__version__
    assert card["created"].endswith("+00:00")
    assert len(card["git_commit"].split("-")[0]) in (40, len("unknown"))


def test_other_signatures_and_assets_are_exported(tmp_path: Path) -> None:
    request = tiny_request()
    model = request.model

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="half")])
    def doubled(half: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(tf.concat([half, half], axis=1), training=False)}

    extra_asset = tmp_path / "class_index.json"
    extra_asset.write_text('{"0": "a"}')
    request.other_signatures = {"from_half": doubled}
    request.other_assets = [extra_asset]
    version_dir = export_model(request, tmp_path / "models", keep_versions=None)

    assert (version_dir / "assets" / "class_index.json").read_text() == '{"0": "a"}'
    loaded = tf.saved_model.load(str(version_dir))
    assert sorted(loaded.signatures) == ["from_half", "serving_default"]
    x = np.array([[0.1, 0.2]], np.float32)
    np.testing.assert_allclose(
        loaded.signatures["from_half"](half=x)["probabilities"].numpy(),
        model.predict(np.concatenate([x, x], axis=1), verbose=0),
        rtol=1e-6,
    )
    card = read_model_card(version_dir)
    assert card["signatures"]["from_half"]["inputs"] == {
        "half": {"dtype": "float32", "shape": [None, 2]}
    }


def test_optimizer_state_is_not_exported(tmp_path: Path) -> None:
    request = tiny_request()  # compiled with Adam and trained one step: it has slot variables
    assert request.model.optimizer.variables
    version_dir = export_model(request, tmp_path, keep_versions=None)
    saved = {
        name for name, _ in tf.train.list_variables(str(version_dir / "variables" / "variables"))
    }
    assert not [name for name in saved if "optimizer" in name], sorted(saved)
    assert len([name for name in saved if name.startswith("state/")]) == len(request.model.weights)
