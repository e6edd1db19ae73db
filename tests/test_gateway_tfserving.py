"""The TF Serving REST API (https://www.tensorflow.org/tfx/serving/api_rest) over HTTP, against
a real server: model status, metadata, predict in row and columnar format, errors; and the
shipped models answering sensibly through it."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.core.layout import existing_versions
from tests.conftest import FIXTURES, MODELS_DIR
from tests.saved_models import DTYPE_VALUES, DTYPES, FEATURES, SHIFT, X, affine
from tests.server import assert_same, client_error_message, error_message, mentions, ok_json

pytest_plugins = ["tests.gateway_fixtures"]


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


# --- health -----------------------------------------------------------------------------------


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


# --- model status -----------------------------------------------------------------------------


def available(version: str) -> dict[str, Any]:
    return {
        "version": version,
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


def test_model_status_lists_every_served_version(client: httpx.Client) -> None:
    body = ok_json(client.get("/v1/models/plus"))
    entries = sorted(body["model_version_status"], key=lambda entry: int(entry["version"]))
    assert entries == [available("1"), available("2")]


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/plus/versions/1", "1"),
        ("/v1/models/plus/versions/2", "2"),
        ("/v1/models/plus/labels/stable", "1"),
        ("/v1/models/plus/labels/canary", "2"),
    ],
)
def test_model_status_of_one_version_or_label(
    client: httpx.Client, path: str, version: str
) -> None:
    assert ok_json(client.get(path)) == {"model_version_status": [available(version)]}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/nope",
        "/v1/models/plus/versions/7",
        "/v1/models/plus/labels/nope",
        "/v1/models/nope/metadata",
        "/v1/models/plus/versions/7/metadata",
        "/v1/models/plus/labels/nope/metadata",
    ],
)
def test_status_and_metadata_of_unknown_model_version_or_label_is_404(
    client: httpx.Client, path: str
) -> None:
    error_message(client.get(path), 404)


# --- metadata ---------------------------------------------------------------------------------


def signature_defs(body: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = body["metadata"]["signature_def"]["signature_def"]
    return defs


def describe(tensors: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """TensorInfo JSON -> {name: (dtype, [dim sizes as strings])}, checking the proto shape."""
    described = {}
    for name, info in tensors.items():
        assert isinstance(info["name"], str) and info["name"], info
        shape = info["tensor_shape"]
        assert shape.get("unknown_rank", False) is False, info
        described[name] = (info["dtype"], [dim["size"] for dim in shape["dim"]])
    return described


def test_metadata_of_the_default_version(client: httpx.Client) -> None:
    body = ok_json(client.get("/v1/models/plus/metadata"))
    assert body["model_spec"] == {"name": "plus", "signature_name": "", "version": "2"}
    signature = signature_defs(body)["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert describe(signature["inputs"]) == {"x": ("DT_FLOAT", ["-1"])}
    assert describe(signature["outputs"]) == {"y": ("DT_FLOAT", ["-1"])}


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1/models/plus/versions/1/metadata", "1"),
        ("/v1/models/plus/labels/stable/metadata", "1"),
        ("/v1/models/plus/labels/canary/metadata", "2"),
    ],
)
def test_metadata_of_a_version_or_label(client: httpx.Client, path: str, version: str) -> None:
    body = ok_json(client.get(path))
    assert body["model_spec"] == {"name": "plus", "signature_name": "", "version": version}
    assert "serving_default" in signature_defs(body)


def test_metadata_lists_every_signature_with_shapes_and_dtypes(client: httpx.Client) -> None:
    body = ok_json(client.get("/v1/models/multi/metadata"))
    assert body["model_spec"]["version"] == "1"
    defs = signature_defs(body)
    assert {"serving_default", "scale"} <= set(defs)
    assert describe(defs["serving_default"]["inputs"]) == {
        FEATURES: ("DT_FLOAT", ["-1", "3"]),
        SHIFT: ("DT_INT32", ["-1"]),
    }
    assert describe(defs["serving_default"]["outputs"]) == {
        "sum": ("DT_FLOAT", ["-1", "3"]),
        "count": ("DT_INT64", ["-1"]),
    }
    assert describe(defs["scale"]["inputs"]) == {FEATURES: ("DT_FLOAT", ["-1", "3"])}
    assert describe(defs["scale"]["outputs"]) == {"scaled": ("DT_FLOAT", ["-1", "3"])}
    assert defs["scale"]["method_name"] == "tensorflow/serving/predict"


def test_metadata_of_string_and_other_dtypes(client: httpx.Client) -> None:
    text = signature_defs(ok_json(client.get("/v1/models/text/metadata")))["serving_default"]
    assert describe(text["inputs"]) == {"text": ("DT_STRING", ["-1"])}
    assert describe(text["outputs"]) == {
        "length": ("DT_INT32", ["-1"]),
        "echo_bytes": ("DT_STRING", ["-1"]),
        "upper": ("DT_STRING", ["-1"]),
    }
    dtypes = signature_defs(ok_json(client.get("/v1/models/dtypes/metadata")))
    assert describe(dtypes["serving_default"]["inputs"]) == {
        f"x_{label}": (dt, ["-1"]) for label, _, dt, _ in DTYPES
    }


# --- predict: routing to versions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "version"),
    [
        ("/v1/models/plus", 2),  # no version: the highest available one
        ("/v1/models/plus/versions/1", 1),
        ("/v1/models/plus/versions/2", 2),
        ("/v1/models/plus/labels/stable", 1),
        ("/v1/models/plus/labels/canary", 2),
    ],
)
def test_predict_row_format_goes_to_the_requested_version(
    client: httpx.Client, prefix: str, version: int
) -> None:
    body = ok_json(client.post(f"{prefix}:predict", json={"instances": X}))
    assert set(body) == {"predictions"}
    assert_same(body["predictions"], affine(version))


def test_half_plus_two_example(client: httpx.Client) -> None:
    body = ok_json(client.post("/v1/models/plus/versions/1:predict", json={"instances": X}))
    assert_same(body, {"predictions": [2.5, 3.0, 4.5]})


@pytest.mark.parametrize(
    "inputs", [pytest.param(X, id="bare-value"), pytest.param({"x": X}, id="named")]
)
def test_predict_columnar_single_input_and_output(client: httpx.Client, inputs: Any) -> None:
    body = ok_json(client.post("/v1/models/plus:predict", json={"inputs": inputs}))
    assert set(body) == {"outputs"}
    assert_same(body["outputs"], affine(2))


def test_predict_accepts_an_explicit_default_signature_and_one_instance(
    client: httpx.Client,
) -> None:
    body = ok_json(
        client.post(
            "/v1/models/plus/versions/1:predict",
            json={"signature_name": "serving_default", "instances": [4.0]},
        )
    )
    assert_same(body["predictions"], [4.0])


@pytest.mark.parametrize(
    "prefix", ["/v1/models/nope", "/v1/models/plus/versions/7", "/v1/models/plus/labels/nope"]
)
def test_predict_on_unknown_model_version_or_label_is_404(
    client: httpx.Client, prefix: str
) -> None:
    error_message(client.post(f"{prefix}:predict", json={"instances": X}), 404)


# --- predict: several inputs and outputs ------------------------------------------------------


def test_predict_row_format_with_several_inputs_and_outputs(client: httpx.Client) -> None:
    instances = [{FEATURES: [1.0, 2.0, 3.0], SHIFT: 1}, {FEATURES: [4.0, 5.0, 6.0], SHIFT: 2}]
    body = ok_json(client.post("/v1/models/multi:predict", json={"instances": instances}))
    assert_same(
        body,
        {
            "predictions": [
                {"sum": [2.0, 3.0, 4.0], "count": 3},
                {"sum": [6.0, 7.0, 8.0], "count": 3},
            ]
        },
    )


def test_predict_columnar_with_several_inputs_and_outputs(client: httpx.Client) -> None:
    inputs = {FEATURES: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], SHIFT: [1, -4]}
    body = ok_json(client.post("/v1/models/multi:predict", json={"inputs": inputs}))
    assert_same(
        body,
        {"outputs": {"sum": [[2.0, 3.0, 4.0], [0.0, 1.0, 2.0]], "count": [3, 3]}},
    )


def test_predict_with_another_signature(client: httpx.Client) -> None:
    row = ok_json(
        client.post(
            "/v1/models/multi:predict",
            json={"signature_name": "scale", "instances": [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]},
        )
    )
    assert_same(row, {"predictions": [[2.0, 4.0, 6.0], [1.0, 0.0, -2.0]]})
    columnar = ok_json(
        client.post(
            "/v1/models/multi:predict",
            json={"signature_name": "scale", "inputs": {FEATURES: [[1.0, 2.0, 3.0]]}},
        )
    )
    assert_same(columnar, {"outputs": [[2.0, 4.0, 6.0]]})


# --- predict: strings and binary data ---------------------------------------------------------


def test_predict_strings_row_format(client: httpx.Client) -> None:
    body = ok_json(client.post("/v1/models/text:predict", json={"instances": ["abc", "hé"]}))
    assert_same(
        body,
        {
            "predictions": [
                {"length": 3, "echo_bytes": b64(b"abc"), "upper": "ABC"},
                # "é" is two bytes in UTF-8; tf.strings.upper only changes ASCII letters
                {"length": 3, "echo_bytes": b64("hé".encode()), "upper": "Hé"},
            ]
        },
    )


def test_predict_b64_inputs_are_decoded(client: httpx.Client) -> None:
    body = ok_json(
        client.post("/v1/models/text:predict", json={"instances": [b64(b"hello world"), b64(b"")]})
    )
    assert_same(
        body,
        {
            "predictions": [
                {"length": 11, "echo_bytes": b64(b"hello world"), "upper": "HELLO WORLD"},
                {"length": 0, "echo_bytes": b64(b""), "upper": ""},
            ]
        },
    )


def test_predict_bytes_with_control_characters_round_trip_through_b64(
    client: httpx.Client,
) -> None:
    raw = '\x00\x01\t\n é€ ☃ \\ "'.encode()
    body = ok_json(client.post("/v1/models/text:predict", json={"inputs": {"text": [b64(raw)]}}))
    assert_same(
        body["outputs"],
        {"length": [len(raw)], "echo_bytes": [b64(raw)], "upper": [raw.decode()]},
    )


def test_predict_strings_columnar(client: httpx.Client) -> None:
    body = ok_json(client.post("/v1/models/text:predict", json={"inputs": ["ab", "xyz"]}))
    assert_same(
        body,
        {
            "outputs": {
                "length": [2, 3],
                "echo_bytes": [b64(b"ab"), b64(b"xyz")],
                "upper": ["AB", "XYZ"],
            }
        },
    )


# --- predict: every dtype ---------------------------------------------------------------------


def test_predict_round_trips_every_dtype_columnar(client: httpx.Client) -> None:
    assert {label for label, *_ in DTYPES} == set(DTYPE_VALUES)
    inputs = {f"x_{label}": values for label, values in DTYPE_VALUES.items()}
    body = ok_json(client.post("/v1/models/dtypes:predict", json={"inputs": inputs}))
    assert_same(body["outputs"], {f"y_{label}": v for label, v in DTYPE_VALUES.items()})


def test_predict_round_trips_every_dtype_row_format(client: httpx.Client) -> None:
    instances = [
        {f"x_{label}": values[row] for label, values in DTYPE_VALUES.items()} for row in (0, 1)
    ]
    expected = [
        {f"y_{label}": values[row] for label, values in DTYPE_VALUES.items()} for row in (0, 1)
    ]
    body = ok_json(client.post("/v1/models/dtypes:predict", json={"instances": instances}))
    assert_same(body["predictions"], expected)


# --- predict: bad requests --------------------------------------------------------------------

FLOATISH = ("float", "fp32", "dt_float")
INTISH = ("int",)
RECEIVED_NON_INTEGER = ("float", "1.5", "double", "decimal", "fraction", "non-integ", "real")
RECEIVED_STRING = ("str", "bytes", "text", "one")


@pytest.mark.parametrize(
    ("model", "body", "names", "hints"),
    [
        pytest.param("plus", b"{not json", [], [], id="malformed-json"),
        pytest.param("plus", b"[1.0, 2.0]", [], [], id="body-not-an-object"),
        pytest.param("plus", {"instances": X, "inputs": X}, [], [], id="instances-and-inputs"),
        pytest.param("plus", {"signature_name": "serving_default"}, [], [], id="no-data"),
        pytest.param(
            "plus", {"inputs": {"bogus_input": X}}, ["bogus_input"], [], id="unknown-input"
        ),
        pytest.param(
            "multi",
            {"instances": [{FEATURES: [1, 2, 3], SHIFT: 1, "bogus_input": 2}]},
            ["bogus_input"],
            [],
            id="unknown-input-row",
        ),
        pytest.param("multi", {"inputs": {FEATURES: [[1, 2, 3]]}}, [SHIFT], [], id="missing-input"),
        pytest.param(
            "multi",
            {"instances": [{FEATURES: [1, 2, 3]}, {FEATURES: [4, 5, 6]}]},
            [SHIFT],
            [],
            id="missing-input-row",
        ),
        pytest.param(
            "multi",
            {"inputs": {FEATURES: [[1, 2, 3, 4], [5, 6, 7, 8]], SHIFT: [1, 2]}},
            [FEATURES],
            [("3",), ("4",)],
            id="wrong-shape",
        ),
        pytest.param(
            "multi",
            {"instances": [{FEATURES: [1, 2, 3, 4], SHIFT: 1}]},
            [FEATURES],
            [("3",), ("4",)],
            id="wrong-shape-row",
        ),
        pytest.param(
            "multi",
            {"inputs": {FEATURES: [["one", "two", "three"]], SHIFT: [1]}},
            [FEATURES],
            [FLOATISH, RECEIVED_STRING],
            id="string-for-float",
        ),
        pytest.param(
            "multi",
            {"inputs": {FEATURES: [[1, 2, 3], [4, 5, 6]], SHIFT: [1, 1.5]}},
            [SHIFT],
            [INTISH, RECEIVED_NON_INTEGER],
            id="fraction-for-int32",
        ),
        pytest.param(
            "multi",
            {"instances": [{FEATURES: [1, 2, 3], SHIFT: 1.5}]},
            [SHIFT],
            [INTISH, RECEIVED_NON_INTEGER],
            id="fraction-for-int32-row",
        ),
        pytest.param(
            "multi",
            {"signature_name": "scale", "instances": [[1, 2, 3], [1, 2]]},
            [],
            [],
            id="ragged-instances",
        ),
        pytest.param(
            "multi",
            {"inputs": {FEATURES: [[1, 2, 3], [1, 2]], SHIFT: [1, 2]}},
            [],
            [],
            id="ragged-columnar",
        ),
        pytest.param(
            "multi",
            {"instances": [{FEATURES: [1, 2, 3], SHIFT: 1}, {FEATURES: [4, 5, 6]}]},
            [],
            [],
            id="row-objects-with-different-keys",
        ),
        pytest.param(
            "text", {"instances": [{"b64": "%%% not base64 %%%"}]}, [], [], id="invalid-b64"
        ),
        pytest.param(
            "plus",
            {"signature_name": "bogus_signature", "instances": X},
            ["bogus_signature"],
            [],
            id="unknown-signature",
        ),
    ],
)
def test_bad_predict_requests_are_400_with_a_message(
    client: httpx.Client,
    model: str,
    body: Any,
    names: list[str],
    hints: list[tuple[str, ...]],
) -> None:
    url = f"/v1/models/{model}:predict"
    if isinstance(body, bytes):
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(url, json=body)
    message = error_message(response, 400)
    for name in names:
        assert mentions(message, name), f"{message!r} does not name {name!r}"
    for alternatives in hints:
        assert any(a in message.lower() for a in alternatives), (
            f"{message!r} mentions none of {alternatives}"
        )


def test_inputs_with_different_batch_sizes_are_a_client_error(client: httpx.Client) -> None:
    inputs = {FEATURES: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], SHIFT: [1, 2, 3]}
    client_error_message(client.post("/v1/models/multi:predict", json={"inputs": inputs}))


def test_the_server_keeps_serving_after_bad_requests(client: httpx.Client) -> None:
    for _ in range(3):
        error_message(client.post("/v1/models/plus:predict", content=b"{"), 400)
    body = ok_json(client.post("/v1/models/plus:predict", json={"instances": X}))
    assert_same(body["predictions"], affine(2))


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_without_such_signatures_are_501(
    client: httpx.Client, verb: str
) -> None:
    response = client.post(f"/v1/models/plus:{verb}", json={"examples": [{"x": 1.0}]})
    error_message(response, 501)


# --- the shipped models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(shipped_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shipped_server, timeout=120) as client:
        yield client


def test_shipped_digits_gives_ten_probabilities_for_a_blank_image(shipped: httpx.Client) -> None:
    blank = np.zeros((28, 28, 1), dtype=np.float32).tolist()
    body = ok_json(shipped.post("/v1/models/digits:predict", json={"instances": [blank]}))
    (probabilities,) = body["predictions"]
    assert len(probabilities) == 10
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-3)


def test_shipped_digits_reads_real_mnist_digits(shipped: httpx.Client) -> None:
    pngs = sorted((FIXTURES / "mnist").glob("*.png"))
    assert len(pngs) == 10
    images = [np.asarray(Image.open(png).convert("L"), dtype=np.float32) / 255.0 for png in pngs]
    instances = [image[..., np.newaxis].tolist() for image in images]
    expected = [int(png.stem.rsplit("label", 1)[1]) for png in pngs]
    body = ok_json(shipped.post("/v1/models/digits:predict", json={"instances": instances}))
    predicted = [int(np.argmax(p)) for p in body["predictions"]]
    assert predicted == expected


def test_shipped_sentiment_reads_raw_text(shipped: httpx.Client) -> None:
    version = existing_versions(MODELS_DIR / "sentiment")[-1]
    labels_file = MODELS_DIR / "sentiment" / str(version) / "assets" / "labels.txt"
    positive = labels_file.read_text(encoding="utf-8").splitlines().index("positive")
    texts = [
        "a wonderful, moving film",
        "This was a wonderful film. Brilliant acting and a moving story, I loved it.",
        "a terrible, boring film",
        "Terrible. The worst movie I have ever seen, a complete waste of time.",
    ]
    body = ok_json(shipped.post("/v1/models/sentiment:predict", json={"instances": texts}))
    scores = [p[positive] for p in body["predictions"]]
    assert scores[0] > 0.5 and scores[1] > 0.5, scores
    assert scores[2] < 0.5 and scores[3] < 0.5, scores
