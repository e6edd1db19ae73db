"""TF Serving's Classify and Regress on tf.Example signatures, over REST (`:classify`,
`:regress`) and gRPC, against the session's `protocol_server` and its `examples` model (see
saved_models.export_examples: features x (float) and bias (int64, default 0); scores
[x, 2x, bias] for classes low/mid/high; regression 3x + bias).

- Answers: classes and scores, scores only (labels ""), classes only (scores 0), regression;
  the same answers over REST and gRPC; contexts merged into every example; version selection.
- The JSON -> tf.Example mapping (ints, floats, strings, b64, lists, empty lists, context),
  read back from the serialized protos.
- Refusals: no such signature in the model (UNIMPLEMENTED / 501), the wrong signature
  (INVALID_ARGUMENT / 400 naming the right ones), malformed bodies and examples, examples the
  model rejects; one bad request does not fail the good ones sharing its batch.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    input_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from service.core import classify_regress
from service.errors import InvalidInputError
from tests.saved_models import CLASSES, example_regression, example_scores
from tests.server import assert_same, error_message, grpc_target, mentions
from tests.test_grpc import on_aio, refused
from tests.test_metrics import moved, scrape

pytest_plugins = ["tests.gateway_fixtures"]

Code = grpc.StatusCode
CLASSIFY_ROUTE = "/tensorflow.serving.PredictionService/Classify"


@pytest.fixture(scope="module")
def target(protocol_server: str) -> str:
    return grpc_target(protocol_server)


def expected_classes(x: float, bias: int = 0, *, labels: bool = True, scores: bool = True) -> Any:
    return [
        [label if labels else "", score if scores else 0.0]
        for label, score in zip(CLASSES, example_scores(x, bias), strict=True)
    ]


def example(**features: float | int) -> example_pb2.Example:
    proto = example_pb2.Example()
    for name, value in features.items():
        feature = proto.features.feature[name]
        if isinstance(value, float):
            feature.float_list.value.append(value)
        else:
            feature.int64_list.value.append(value)
    return proto


def classify_request(
    examples: list[example_pb2.Example],
    signature: str = "classify",
    context: example_pb2.Example | None = None,
    model: str = "examples",
) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    _fill(request.input, examples, context)
    return request


def regress_request(
    examples: list[example_pb2.Example], signature: str = "regress"
) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = signature
    _fill(request.input, examples, None)
    return request


def _fill(
    target: input_pb2.Input,
    examples: list[example_pb2.Example],
    context: example_pb2.Example | None,
) -> None:
    if context is None:
        target.example_list.examples.extend(examples)
    else:
        target.example_list_with_context.examples.extend(examples)
        target.example_list_with_context.context.CopyFrom(context)


def as_rows(result: classification_pb2.ClassificationResult) -> list[list[list[Any]]]:
    return [[[c.label, c.score] for c in item.classes] for item in result.classifications]


# --- answers -------------------------------------------------------------------------------


def test_rest_classify_gives_labels_and_scores(client: httpx.Client) -> None:
    body = {"signature_name": "classify", "examples": [{"x": 1.5}, {"x": -2.0, "bias": 7}]}
    response = client.post("/v1/models/examples:classify", json=body)
    assert response.status_code == 200, response.text
    assert_same(response.json(), {"result": [expected_classes(1.5), expected_classes(-2.0, 7)]})


@pytest.mark.parametrize(
    ("signature", "labels", "scores"),
    [("classify_scores", False, True), ("classify_classes", True, False)],
)
def test_rest_classify_with_one_of_the_two_outputs(
    client: httpx.Client, signature: str, labels: bool, scores: bool
) -> None:
    body = {"signature_name": signature, "examples": [{"x": 0.25, "bias": 3}]}
    response = client.post("/v1/models/examples:classify", json=body)
    assert response.status_code == 200, response.text
    expected = expected_classes(0.25, 3, labels=labels, scores=scores)
    assert_same(response.json(), {"result": [expected]})


def test_rest_regress_with_a_context_and_a_version(client: httpx.Client) -> None:
    body = {"signature_name": "regress", "context": {"bias": 10}, "examples": [{"x": 1.0}] * 2}
    for path in ("/v1/models/examples:regress", "/v1/models/examples/versions/1:regress"):
        response = client.post(path, json=body)
        assert response.status_code == 200, response.text
        assert_same(response.json(), {"result": [example_regression(1.0, 10)] * 2})


def test_non_finite_scores_are_written_as_tf_serving_writes_them(client: httpx.Client) -> None:
    response = client.post(
        "/v1/models/examples:classify",
        content=b'{"signature_name": "classify", "examples": [{"x": Infinity}]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    (classes,) = json.loads(response.text)["result"]  # the stdlib reads Infinity tokens
    assert classes == [["low", math.inf], ["mid", math.inf], ["high", 0.0]]


def test_grpc_classify_and_regress(target: str) -> None:
    async def calls(channel: grpc.aio.Channel) -> tuple[Any, Any]:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        classified = await stub.Classify(
            classify_request([example(x=1.5), example(x=-2.0, bias=7)])
        )
        regressed = await stub.Regress(regress_request([example(x=0.5), example(x=2.0, bias=-1)]))
        return classified, regressed

    classified, regressed = on_aio(target, calls)
    assert_same(as_rows(classified.result), [expected_classes(1.5), expected_classes(-2.0, 7)])
    spec = classified.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("examples", 1, "classify")
    values = [r.value for r in regressed.result.regressions]
    assert_same(values, [example_regression(0.5), example_regression(2.0, -1)])
    assert regressed.model_spec.signature_name == "regress"


def test_grpc_context_is_merged_into_every_example_and_the_example_wins(target: str) -> None:
    request = classify_request([example(x=1.0), example(x=2.0, bias=2)], context=example(bias=5))

    async def call(channel: grpc.aio.Channel) -> Any:
        return await prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request)

    answer = on_aio(target, call)
    assert_same(as_rows(answer.result), [expected_classes(1.0, 5), expected_classes(2.0, 2)])


def test_rest_and_grpc_answer_alike(client: httpx.Client, target: str) -> None:
    xs = [0.0, 0.125, -3.5, 1e6]
    rest = client.post(
        "/v1/models/examples:classify",
        json={"signature_name": "classify", "examples": [{"x": x, "bias": 2} for x in xs]},
    )
    assert rest.status_code == 200, rest.text

    async def call(channel: grpc.aio.Channel) -> Any:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return await stub.Classify(classify_request([example(x=x, bias=2) for x in xs]))

    assert as_rows(on_aio(target, call).result) == rest.json()["result"]


def test_one_bad_request_does_not_fail_the_others_in_its_batch(protocol_server: str) -> None:
    """Concurrent requests sharing a batch (the model holds batches 100 ms), one with an example
    the model rejects (x missing): the batcher retries the batch request by request, so only
    that one fails."""
    good = {"signature_name": "regress", "examples": [{"x": 1.0}]}
    bad = {"signature_name": "regress", "examples": [{"bias": 1}]}

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=protocol_server, timeout=60) as client:
            bodies = [good, bad, good, good]
            return await asyncio.gather(
                *(client.post("/v1/models/examples:regress", json=b) for b in bodies)
            )

    before = scrape(protocol_server)
    responses = asyncio.run(main())
    batches = moved(before, scrape(protocol_server), "modelserve_batches_total", "model")
    assert batches[("examples",)] < len(responses), "no two requests shared a batch"
    assert [r.status_code for r in responses] == [200, 400, 200, 200], [r.text for r in responses]
    assert all(r.json() == {"result": [3.0]} for i, r in enumerate(responses) if i != 1)
    assert mentions(error_message(responses[1], 400), "x")


def test_grpc_classify_calls_are_counted(protocol_server: str, target: str) -> None:
    before = scrape(protocol_server)

    async def calls(channel: grpc.aio.Channel) -> None:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await stub.Classify(classify_request([example(x=1.0)]))
        await refused(
            stub.Classify(classify_request([example(x=1.0)], "regress")), Code.INVALID_ARGUMENT
        )

    on_aio(target, calls)
    moves = moved(
        before,
        scrape(protocol_server),
        "modelserve_requests_total",
        "model",
        "protocol",
        "route",
        "code",
    )
    assert moves[("examples", "grpc", CLASSIFY_ROUTE, "OK")] == 1
    assert moves[("examples", "grpc", CLASSIFY_ROUTE, "INVALID_ARGUMENT")] == 1


# --- JSON -> tf.Example -------------------------------------------------------------------


def parsed(serialized: np.ndarray) -> list[dict[str, tuple[str, list[Any]]]]:
    """{feature: (kind, values)} per serialized example."""
    rows = []
    for item in serialized:
        proto = example_pb2.Example.FromString(item)
        row = {}
        for name, feature in proto.features.feature.items():
            kind = feature.WhichOneof("kind") or ""
            row[name] = (kind, list(getattr(feature, kind).value) if kind else [])
        rows.append(row)
    return rows


def test_json_features_become_typed_feature_lists() -> None:
    body = {
        "signature_name": "s",
        "context": {"country": "NZ", "weights": [0.5, 2]},
        "examples": [
            {"age": 41, "income": 52.5, "tags": ["a", "é"], "photo": {"b64": "AAEC/w=="}},
            {"age": [1, -(2**63), 2**63 - 1], "none": [], "nan": math.nan},
        ],
    }
    signature, serialized = classify_regress.serialized_from_json(body)
    assert signature == "s"
    first, second = parsed(serialized)
    context = {"country": ("bytes_list", [b"NZ"]), "weights": ("float_list", [0.5, 2.0])}
    assert first == context | {
        "age": ("int64_list", [41]),
        "income": ("float_list", [52.5]),
        "tags": ("bytes_list", [b"a", "é".encode()]),
        "photo": ("bytes_list", [b"\x00\x01\x02\xff"]),
    }
    nan_kind, (nan_value,) = second.pop("nan")
    assert nan_kind == "float_list" and math.isnan(nan_value)
    assert second == context | {
        "age": ("int64_list", [1, -(2**63), 2**63 - 1]),
        "none": ("", []),
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([{"x": 1.0}], ["object"]),
        ({}, ["examples"]),
        ({"examples": []}, ["examples"]),
        ({"examples": {"x": 1.0}}, ["examples"]),
        ({"examples": [[1.0]]}, ["examples[0]"]),
        ({"examples": [{"x": 1.0}], "instances": [1]}, ["instances"]),
        ({"examples": [{"x": 1.0}], "signature_name": 3}, ["signature_name"]),
        ({"examples": [{"x": 1.0}], "context": [1]}, ["context"]),
        ({"examples": [{"x": True}]}, ["x", "true/false"]),
        ({"examples": [{"x": [[1.0]]}]}, ["x", "list"]),
        ({"examples": [{"x": None}]}, ["x", "NoneType"]),
        ({"examples": [{"x": [1.0, "a"]}]}, ["x", "mixes"]),
        ({"examples": [{"x": {"b64": "%%%"}}]}, ["x", "base64"]),
        ({"examples": [{"x": {"b64": 5}}]}, ["x", "b64"]),
        ({"examples": [{"x": "\ud800"}]}, ["x", "Unicode"]),
        ({"examples": [{"x": {"b64": "AA==", "more": 1}}]}, ["x", "dict"]),
        ({"examples": [{"x": 2**63}]}, ["x", "int64"]),
        ({"examples": [{"x": [1e39]}]}, ["x", "float32"]),
        (
            {"examples": [{"x": 1.0}, {"bias": 1, "y": 2}], "context": {"y": 1}},
            ["examples[1]", "y"],
        ),
    ],
)
def test_malformed_examples_are_refused_with_a_reason(body: Any, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as raised:
        classify_regress.serialized_from_json(body)
    message = raised.value.message
    assert all(word in message for word in words), message


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "signature", "status", "words"),
    [
        ("classify", None, 400, ["serving_default", "classify", "classify_scores"]),
        ("classify", "regress", 400, ["regress", "tensorflow/serving/classify"]),
        ("regress", "classify", 400, ["classify", "tensorflow/serving/regress"]),
        ("classify", "nope", 400, ["nope"]),
    ],
)
def test_the_wrong_signature_is_refused_naming_the_right_ones(
    client: httpx.Client, verb: str, signature: str | None, status: int, words: list[str]
) -> None:
    body: dict[str, Any] = {"examples": [{"x": 1.0}]}
    if signature is not None:
        body["signature_name"] = signature
    message = error_message(client.post(f"/v1/models/examples:{verb}", json=body), status)
    assert all(word in message for word in words), message


def test_a_model_without_such_signatures_is_501_before_the_body_is_read(
    client: httpx.Client,
) -> None:
    # the body is not even JSON: the 501 comes from the model's signatures alone
    message = error_message(client.post("/v1/models/plus:regress", content=b"{not json"), 501)
    assert "tensorflow/serving/regress" in message and mentions(message, "predict"), message


def test_examples_the_model_rejects_are_400(client: httpx.Client) -> None:
    cases = [
        [{"bias": 1}],  # x is required
        [{"x": 1}],  # x is a float feature; 1 is an int64_list (as TF Serving maps it)
        [{"x": [1.0, 2.0]}],  # x has one value
    ]
    for examples in cases:
        response = client.post(
            "/v1/models/examples:classify",
            json={"signature_name": "classify", "examples": examples},
        )
        message = error_message(response, 400)
        assert mentions(message, "examples") and "rejected" in message, message


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("empty input", Code.INVALID_ARGUMENT, ["input"]),
        ("no examples", Code.INVALID_ARGUMENT, ["examples"]),
        ("default signature", Code.INVALID_ARGUMENT, ["serving_default", "classify"]),
        ("missing feature", Code.INVALID_ARGUMENT, ["rejected"]),
        ("unknown model", Code.NOT_FOUND, ["nope"]),
        ("no such signatures", Code.UNIMPLEMENTED, ["tensorflow/serving/classify", "plus"]),
    ],
)
def test_grpc_refusals(target: str, case: str, code: Code, words: list[str]) -> None:
    request = {
        "empty input": classify_request([]),
        "no examples": classify_request([], context=example(bias=1)),
        "default signature": classify_request([example(x=1.0)], signature=""),
        "missing feature": classify_request([example(bias=1)]),
        "unknown model": classify_request([example(x=1.0)], model="nope"),
        "no such signatures": classify_request([example(x=1.0)], model="plus"),
    }[case]

    async def call(channel: grpc.aio.Channel) -> str:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return await refused(stub.Classify(request), code)

    details = on_aio(target, call)
    assert all(word in details for word in words), details
