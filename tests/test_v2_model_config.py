"""Triton's model configuration extension against a real server: what modelserve knows of a
version, in the JSON form of Triton's ModelConfig (`GET /v2/models/{m}[/versions/{v}]/config`)."""

from __future__ import annotations

import httpx
import pytest

from tests.saved_models import FEATURES, SHIFT
from tests.server import error_message, ok_json

pytest_plugins = ["tests.gateway_fixtures"]


def test_the_server_metadata_lists_the_extension(client: httpx.Client) -> None:
    assert "model_configuration" in ok_json(client.get("/v2"))["extensions"]


def test_a_batched_models_config(client: httpx.Client) -> None:
    """multi: default batching (32 rows, no delay, 256 queued, 30 s), one CPU instance; dims
    leave the batch dimension out, as Triton's do for a model with max_batch_size > 0."""
    config = ok_json(client.get("/v2/models/multi/config"))
    assert config == {
        "name": "multi",
        "platform": "tensorflow_savedmodel",
        "backend": "tensorflow",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 32,
        "input": [
            {"name": FEATURES, "data_type": "TYPE_FP32", "dims": [3]},
            {"name": SHIFT, "data_type": "TYPE_INT32", "dims": []},
        ],
        "output": config["output"],
        "instance_group": [{"name": "multi", "kind": "KIND_CPU", "count": 1}],
        "dynamic_batching": {
            "max_queue_delay_microseconds": 0,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": 30_000_000,
                "max_queue_size": 256,
            },
        },
    }
    metadata = ok_json(client.get("/v2/models/multi"))
    assert [o["name"] for o in config["output"]] == [o["name"] for o in metadata["outputs"]]
    for output, described in zip(config["output"], metadata["outputs"], strict=True):
        assert output["dims"] == described["shape"][1:]


def test_strings_are_type_string_and_policies_carry_over(client: httpx.Client) -> None:
    text = ok_json(client.get("/v2/models/text/config"))
    assert text["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": []}]
    plus = ok_json(client.get("/v2/models/plus/versions/1/config"))
    assert plus["version_policy"] == {"all": {}}
    assert plus["name"] == "plus"


@pytest.mark.parametrize("path", ["/v2/models/nope/config", "/v2/models/plus/versions/9/config"])
def test_config_of_an_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    assert error_message(client.get(path), 404)
