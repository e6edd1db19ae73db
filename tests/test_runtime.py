"""One loaded version (`service.core.runtime.LoadedModel`): warm-up before a version is AVAILABLE,
and TensorFlow's own complaints about a request's values turned into 400s."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from service.core.batching import ModelCall
from service.core.runtime import LoadedModel
from service.errors import InvalidInputError
from service.settings import Settings
from tests.saved_models import _save_atomically, export_affine
from tests.server import running_server, version_status, wait_for


def export_positive_only(base: Path, name: str, version: int) -> Path:
    """`x` float32 [None] -> `y` = sqrt(x), refusing any x <= 0 (so zeros fail warm-up)."""

    class PositiveOnly(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.control_dependencies([tf.debugging.assert_positive(x, message="x <= 0")]):
                return {"y": tf.sqrt(x)}

    module = PositiveOnly()
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


def export_png_reader(base: Path, name: str, version: int) -> Path:
    """`png` string [None] -> `height` of each decoded PNG (empty strings fail to decode)."""

    class PngReader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
        def serve(self, png: tf.Tensor) -> dict[str, tf.Tensor]:
            heights = tf.map_fn(
                lambda data: tf.shape(tf.io.decode_png(data))[0], png, fn_output_signature=tf.int32
            )
            return {"height": heights}

    module = PngReader()
    return _save_atomically(module, {"serving_default": module.serve}, base, name, version)


def test_warm_up_calls_the_model_and_a_numeric_failure_propagates(tmp_path: Path) -> None:
    model = LoadedModel("positive", 1, export_positive_only(tmp_path, "positive", 1))
    with pytest.raises(ValueError, match=r"warm-up of signature 'serving_default'.*x <= 0"):
        model.warm_up()
    # the same model answers valid requests: warm-up failed on the synthesized zeros only
    outputs = model.run(ModelCall("serving_default", {"x": np.array([4.0], dtype=np.float32)}))
    assert outputs["y"].tolist() == [2.0]


def test_warm_up_tolerates_string_inputs_it_cannot_synthesize(tmp_path: Path) -> None:
    model = LoadedModel("png", 1, export_png_reader(tmp_path, "png", 1))
    assert model.warm_up() >= 0  # empty strings are not PNGs: logged, not fatal
    png = tf.io.encode_png(tf.zeros([3, 5, 1], tf.uint8)).numpy()
    outputs = model.run(ModelCall("serving_default", {"png": np.array([png], dtype=object)}))
    assert outputs["height"].tolist() == [3]
    with pytest.raises(InvalidInputError, match="Unknown image file format"):
        model.run(ModelCall("serving_default", {"png": np.array([b"not a png"], dtype=object)}))


def test_warm_up_runs_every_signature(tmp_path: Path) -> None:
    model = LoadedModel("plus", 1, export_affine(tmp_path, "plus", 1))
    assert list(model.signatures) == ["serving_default"]
    assert model.warm_up() > 0


def test_a_version_failing_warm_up_is_never_available(tmp_path: Path) -> None:
    """The server reports it END with the warm-up error; the model's good version serves."""
    export_affine(tmp_path, "model", 1)
    export_positive_only(tmp_path, "model", 2)
    settings = Settings(model_base_path=tmp_path, poll_interval_seconds=0)
    with (
        running_server(settings, wait_ready=False) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        status = wait_for(
            lambda: (s := version_status(client, "model")).get("2", {}).get("state") == "END" and s,
            timeout=60,
            what="version 2 to fail warm-up",
        )
        assert "x <= 0" in status["2"]["status"]["error_message"]
        # latest 1 wanted version 2; version 1 was never loaded, so nothing is available
        assert client.get("/readyz").status_code == 503
        answer = client.post("/v1/models/model:predict", json={"instances": [4.0]})
        assert answer.status_code == 503
        assert "x <= 0" in answer.json()["error"]
