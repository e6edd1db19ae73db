"""The Open Inference Protocol (KServe V2) REST API over HTTP, against a real server: server and
model metadata, readiness, infer with every datatype, output selection, errors; and the shipped
`votes` model answering through it."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf

from service.core.layout import existing_versions
from tests.conftest import MODELS_DIR
from tests.saved_models import DTYPE_VALUES, DTYPES, FEATURES, SHIFT, X, affine
from tests.server import assert_same, client_error_message, error_message, mentions, ok_json

pytest_plugins = ["tests.gateway_fixtures"]


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def outputs_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    outputs = body["outputs"]
    assert isinstance(outputs, list)
    by_name = {output["name"]: output for output in outputs}
    assert len(by_name) == len(outputs), outputs
    return by_name


def io_description(entries: list[dict[str, Any]]) -> dict[str, tuple[str, list[int]]]:
    return {entry["name"]: (entry["datatype"], entry["shape"]) for entry in entries}


# --- server -----------------------------------------------------------------------------------


def test_server_metadata(client: httpx.Client) -> None:
    body = ok_json(client.get("/v2"))
    assert body["name"] == "modelserve"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["extensions"], list)
    assert all(isinstance(extension, str) for extension in body["extensions"])


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/healthz", "/readyz"])
def test_health(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


# --- model metadata and readiness -------------------------------------------------------------


def test_model_metadata(client: httpx.Client) -> None:
    body = ok_json(client.get("/v2/models/plus"))
    assert body["name"] == "plus"
    assert sorted(body["versions"], key=int) == ["1", "2"]
    assert body["platform"] == "tensorflow_savedmodel"
    assert io_description(body["inputs"]) == {"x": ("FP32", [-1])}
    assert io_description(body["outputs"]) == {"y": ("FP32", [-1])}
    assert len(body["inputs"]) == 1 and len(body["outputs"]) == 1


def test_model_metadata_of_a_version(client: httpx.Client) -> None:
    body = ok_json(client.get("/v2/models/plus/versions/1"))
    assert body["name"] == "plus"
    assert body["platform"] == "tensorflow_savedmodel"
    assert io_description(body["inputs"]) == {"x": ("FP32", [-1])}


def test_model_metadata_with_several_inputs_and_outputs(client: httpx.Client) -> None:
    body = ok_json(client.get("/v2/models/multi"))
    assert body["versions"] == ["1"]
    assert io_description(body["inputs"]) == {FEATURES: ("FP32", [-1, 3]), SHIFT: ("INT32", [-1])}
    assert io_description(body["outputs"]) == {"sum": ("FP32", [-1, 3]), "count": ("INT64", [-1])}


def test_model_metadata_datatypes(client: httpx.Client) -> None:
    text = ok_json(client.get("/v2/models/text"))
    assert io_description(text["inputs"]) == {"text": ("BYTES", [-1])}
    assert io_description(text["outputs"]) == {
        "length": ("INT32", [-1]),
        "echo_bytes": ("BYTES", [-1]),
        "upper": ("BYTES", [-1]),
    }
    dtypes = ok_json(client.get("/v2/models/dtypes"))
    assert io_description(dtypes["inputs"]) == {
        f"x_{label}": (datatype, [-1]) for label, _, _, datatype in DTYPES
    }
    assert io_description(dtypes["outputs"]) == {
        f"y_{label}": (datatype, [-1]) for label, _, _, datatype in DTYPES
    }


@pytest.mark.parametrize(
    "path", ["/v2/models/plus/ready", "/v2/models/plus/versions/1/ready", "/v2/models/text/ready"]
)
def test_model_ready(client: httpx.Client, path: str) -> None:
    name = path.split("/")[3]
    assert ok_json(client.get(path)) == {"name": name, "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/plus/versions/99",
        "/v2/models/plus/versions/99/ready",
    ],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    error_message(client.get(path), 404)


@pytest.mark.parametrize("path", ["/v2/models/nope/infer", "/v2/models/plus/versions/99/infer"])
def test_infer_on_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    body = {"inputs": [tensor("x", "FP32", [3], X)]}
    error_message(client.post(path, json=body), 404)


# --- infer ------------------------------------------------------------------------------------


def test_infer_goes_to_the_highest_version_and_echoes_the_id(client: httpx.Client) -> None:
    body = ok_json(
        client.post(
            "/v2/models/plus/infer",
            json={"id": "request-42", "inputs": [tensor("x", "FP32", [3], X)]},
        )
    )
    assert body["model_name"] == "plus"
    assert body["model_version"] == "2"
    assert body["id"] == "request-42"
    (output,) = body["outputs"]
    assert output["name"] == "y"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [3]
    assert_same(output["data"], affine(2))


def test_infer_on_a_version(client: httpx.Client) -> None:
    body = ok_json(
        client.post(
            "/v2/models/plus/versions/1/infer", json={"inputs": [tensor("x", "FP32", [3], X)]}
        )
    )
    assert body["model_name"] == "plus"
    assert body["model_version"] == "1"
    assert_same(body["outputs"][0]["data"], affine(1))


def test_infer_with_several_inputs_and_nested_data(client: httpx.Client) -> None:
    inputs = [
        tensor(FEATURES, "FP32", [2, 3], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        tensor(SHIFT, "INT32", [2], [1, -4]),
    ]
    body = ok_json(client.post("/v2/models/multi/infer", json={"inputs": inputs}))
    assert body["model_version"] == "1"
    outputs = outputs_by_name(body)
    assert set(outputs) == {"sum", "count"}
    assert outputs["sum"]["datatype"] == "FP32"
    assert outputs["sum"]["shape"] == [2, 3]
    assert_same(outputs["sum"]["data"], [2.0, 3.0, 4.0, 0.0, 1.0, 2.0])  # flat, row-major
    assert outputs["count"]["datatype"] == "INT64"
    assert outputs["count"]["shape"] == [2]
    assert_same(outputs["count"]["data"], [3, 3])


def test_infer_with_flat_data(client: httpx.Client) -> None:
    inputs = [
        tensor(FEATURES, "FP32", [2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        tensor(SHIFT, "INT32", [2], [0, 1]),
    ]
    body = ok_json(client.post("/v2/models/multi/infer", json={"inputs": inputs}))
    assert_same(outputs_by_name(body)["sum"]["data"], [1.0, 2.0, 3.0, 5.0, 6.0, 7.0])


def test_infer_returns_only_the_requested_outputs(client: httpx.Client) -> None:
    inputs = [
        tensor(FEATURES, "FP32", [1, 3], [1.0, 2.0, 3.0]),
        tensor(SHIFT, "INT32", [1], [5]),
    ]
    body = ok_json(
        client.post(
            "/v2/models/multi/infer", json={"inputs": inputs, "outputs": [{"name": "count"}]}
        )
    )
    (output,) = body["outputs"]
    assert output["name"] == "count"
    assert_same(output["data"], [3])


def test_infer_accepts_parameters(client: httpx.Client) -> None:
    body = ok_json(
        client.post(
            "/v2/models/plus/infer",
            json={"inputs": [tensor("x", "FP32", [3], X)], "parameters": {"note": "ignored"}},
        )
    )
    assert_same(body["outputs"][0]["data"], affine(2))


def test_infer_bytes(client: httpx.Client) -> None:
    body = ok_json(
        client.post(
            "/v2/models/text/infer", json={"inputs": [tensor("text", "BYTES", [2], ["abc", "hé"])]}
        )
    )
    outputs = outputs_by_name(body)
    assert outputs["length"]["datatype"] == "INT32"
    assert_same(outputs["length"]["data"], [3, 3])  # bytes, "é" is two
    assert outputs["upper"]["datatype"] == "BYTES"
    assert outputs["upper"]["shape"] == [2]
    assert_same(outputs["upper"]["data"], ["ABC", "Hé"])
    assert outputs["echo_bytes"]["datatype"] == "BYTES"
    assert_same(outputs["echo_bytes"]["data"], ["abc", "hé"])


def test_infer_round_trips_every_datatype(client: httpx.Client) -> None:
    inputs = [
        tensor(f"x_{label}", datatype, [2], DTYPE_VALUES[label]) for label, _, _, datatype in DTYPES
    ]
    body = ok_json(client.post("/v2/models/dtypes/infer", json={"inputs": inputs}))
    outputs = outputs_by_name(body)
    assert set(outputs) == {f"y_{label}" for label, *_ in DTYPES}
    for label, _, _, datatype in DTYPES:
        output = outputs[f"y_{label}"]
        assert output["datatype"] == datatype, output
        assert output["shape"] == [2], output
        assert_same(output["data"], DTYPE_VALUES[label])


# --- infer: bad requests ----------------------------------------------------------------------


def multi_inputs(changes: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A valid multi request's inputs; changes={FEATURES: {...}} overrides fields of one."""
    inputs = {
        FEATURES: tensor(FEATURES, "FP32", [2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        SHIFT: tensor(SHIFT, "INT32", [2], [1, 2]),
    }
    for name, fields in (changes or {}).items():
        inputs[name] = {**inputs[name], **fields}
    return list(inputs.values())


@pytest.mark.parametrize(
    ("body", "names", "hints"),
    [
        pytest.param(
            {"inputs": multi_inputs({FEATURES: {"shape": [2, 2]}})},
            [FEATURES],
            [],
            id="shape-and-data-count-differ",
        ),
        pytest.param(
            {"inputs": multi_inputs({FEATURES: {"datatype": "FP64"}})},
            [FEATURES],
            [("FP64",), ("FP32",)],
            id="fp64-for-fp32",
        ),
        pytest.param(
            {"inputs": multi_inputs({SHIFT: {"data": [1, 1.5]}})},
            [SHIFT],
            [],
            id="fraction-in-int32-data",
        ),
        pytest.param(
            {"inputs": multi_inputs({SHIFT: {"data": ["one", "two"]}})},
            [SHIFT],
            [],
            id="strings-in-int32-data",
        ),
        pytest.param(
            {"inputs": multi_inputs()[:1]},
            [SHIFT],
            [],
            id="missing-input",
        ),
        pytest.param(
            {"inputs": [*multi_inputs(), tensor("bogus_input", "FP32", [1], [1.0])]},
            ["bogus_input"],
            [],
            id="unknown-input",
        ),
        pytest.param(
            {"inputs": multi_inputs({FEATURES: {"shape": [-2, -3]}})},
            [FEATURES],
            [],
            id="negative-shape",
        ),
        pytest.param(
            {
                "inputs": multi_inputs(
                    {SHIFT: {"shape": [6], "data": [1, 2, 3, 4, 5, 6]}, FEATURES: {"shape": [6]}}
                )
            },
            [FEATURES],
            [],
            id="wrong-rank",
        ),
        pytest.param(
            {
                "inputs": multi_inputs(
                    {SHIFT: {"shape": [3], "data": [1, 2, 3]}, FEATURES: {"shape": [3, 2]}}
                )
            },
            [FEATURES],
            [],
            id="wrong-inner-dimension",
        ),
        pytest.param(
            {"inputs": multi_inputs(), "outputs": [{"name": "bogus_output"}]},
            ["bogus_output"],
            [],
            id="unknown-output",
        ),
        pytest.param({"inputs": []}, [], [], id="no-inputs"),
    ],
)
def test_bad_infer_requests_are_400_with_a_message(
    client: httpx.Client, body: Any, names: list[str], hints: list[tuple[str, ...]]
) -> None:
    message = error_message(client.post("/v2/models/multi/infer", json=body), 400)
    for name in names:
        assert mentions(message, name), f"{message!r} does not name {name!r}"
    for alternatives in hints:
        assert any(a.lower() in message.lower() for a in alternatives), (
            f"{message!r} mentions none of {alternatives}"
        )


def test_infer_with_wrong_rank_on_a_single_input_model(client: httpx.Client) -> None:
    body = {"inputs": [tensor("x", "FP32", [3, 1], [[1.0], [2.0], [5.0]])]}
    error_message(client.post("/v2/models/plus/infer", json=body), 400)


def test_infer_with_a_malformed_body_is_a_client_error(client: httpx.Client) -> None:
    client_error_message(
        client.post(
            "/v2/models/plus/infer",
            content=b'{"inputs": [',
            headers={"content-type": "application/json"},
        )
    )


def test_infer_with_different_batch_sizes_is_a_client_error(client: httpx.Client) -> None:
    inputs = multi_inputs({SHIFT: {"shape": [3], "data": [1, 2, 3]}})
    client_error_message(client.post("/v2/models/multi/infer", json={"inputs": inputs}))


# --- the shipped votes model ------------------------------------------------------------------


def test_shipped_votes_infers_party_probabilities(shipped_server: str) -> None:
    from training.votes import load_votes

    votes, _, _ = load_votes(None)
    rows = votes[:4].astype(np.float32)
    version = existing_versions(MODELS_DIR / "votes")[-1]
    loaded = tf.saved_model.load(str(MODELS_DIR / "votes" / str(version)))
    expected = loaded.signatures["serving_default"](votes=tf.constant(rows))["probabilities"]

    with httpx.Client(base_url=shipped_server, timeout=120) as client:
        single = ok_json(
            client.post(
                "/v2/models/votes/infer",
                json={"inputs": [tensor("votes", "FP32", [1, 16], rows[0].tolist())]},
            )
        )
        batch = ok_json(
            client.post(
                "/v2/models/votes/infer",
                json={"inputs": [tensor("votes", "FP32", [4, 16], rows.tolist())]},
            )
        )
    (output,) = single["outputs"]
    assert output["name"] == "probabilities"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [1, 2]
    assert len(output["data"]) == 2
    assert sum(output["data"]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(output["data"], expected.numpy()[0], rtol=1e-4, atol=1e-6)
    (output,) = batch["outputs"]
    assert output["shape"] == [4, 2]
    np.testing.assert_allclose(output["data"], expected.numpy().ravel(), rtol=1e-4, atol=1e-6)
