"""The task API (`POST /api/v1/digits`, `/images`, `/sentiment`, `/party`) end to end: real
HTTP against real servers, real data (MNIST, IMDB-style reviews, the UCI votes, photos), every
error path, the limits, and the OpenAPI document.

Servers (each loads its models once):
- `shipped_server` (session, tests.gateway_fixtures): the committed models/, default limits.
- `images_server`: a small stand-in for resnet50 (tests/task_models.py) as version 1 with random
  weights and version 2 with "ImageNet" weights, both served (`version_policy: all`).
- `limits_server`: digits, sentiment, votes and the random-weights stand-in under small limits,
  with `allow_random_weights`.
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from service.core.layout import existing_versions
from service.settings import Settings
from service.tasks.mnist_format import mnist_pixels
from service.tasks.routes import UNCERTAIN_BELOW
from tests.conftest import MODELS_DIR, encode, png, shipped_version
from tests.saved_models import copy_versions, write_config
from tests.server import error_message, mentions, ok_json, running_server
from tests.task_models import (
    Part,
    chunks,
    class_index,
    exif_rotated_jpeg,
    export_standin,
    file_part,
    format_samples,
    gradient,
    house_votes,
    keras_pixels,
    mnist_test,
    multipart,
    noise_png,
    photo_bytes,
    png_header_bomb,
    standin_model,
)
from training import resnet50

pytest_plugins = ["tests.gateway_fixtures"]

DIGITS, IMAGES = "/api/v1/digits", "/api/v1/images"
SENTIMENT, PARTY = "/api/v1/sentiment", "/api/v1/party"
PHOTOS = ["street.jpg", "garden.jpg", "big.jpg", "small.jpg"]  # generated (task_models)
CLASSES = class_index()
CLASS_POSITION = {wnid: position for position, (wnid, _) in enumerate(CLASSES)}
VOTES_VERSION = existing_versions(MODELS_DIR / "votes")[-1]  # the repository keeps the newest
VOTE_COLUMNS: list[str] = json.loads(
    (MODELS_DIR / "votes" / str(VOTES_VERSION) / "assets.extra" / "model_card.json").read_text()
)["vote_columns"]

POSITIVE = (
    "One of the best films I have ever seen. The acting is superb, the story is moving and "
    "beautifully told, and the music is wonderful. A masterpiece: I loved every minute of it."
)
NEGATIVE = (
    "The worst movie I have seen in years. Terrible acting, a boring and predictable plot, "
    "awful dialogue. A complete waste of time and money; avoid it."
)

GENERIC = "application/octet-stream"  # what clients send when they do not know the type

# The limits of `limits_server`.
MAX_ITEMS = 3
MAX_FILES = 3
MAX_BYTES = 64 * 1024
MAX_PIXELS = 250_000
MAX_CHARS = 100


# --- servers and clients ------------------------------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<library>/resnet50/1 (random weights) and /2 ("imagenet"), the same stand-in network."""
    base = tmp_path_factory.mktemp("task-library")
    model = standin_model()
    assert export_standin(base, model, "random") == base / "resnet50" / "1"
    assert export_standin(base, model, "imagenet") == base / "resnet50" / "2"
    return base


@pytest.fixture(scope="module")
def images_server(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("images-server")
    copy_versions(library, root / "repo" / "resnet50", "resnet50")
    config = write_config(root / "serving.yaml", [{"name": "resnet50", "version_policy": "all"}])
    settings = Settings(model_base_path=root / "repo", config=config, poll_interval_seconds=0)
    with running_server(settings, timeout=180) as url:
        yield url


@pytest.fixture(scope="module")
def limits_server(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("limits-server")
    for name in ("digits", "sentiment", "votes"):
        shutil.copytree(MODELS_DIR / name, repo / name)
    copy_versions(library, repo / "resnet50", "resnet50", [1])  # random weights
    settings = Settings(
        model_base_path=repo,
        poll_interval_seconds=0,
        max_items=MAX_ITEMS,
        max_upload_files=MAX_FILES,
        max_request_bytes=MAX_BYTES,
        max_image_pixels=MAX_PIXELS,
        max_text_chars=MAX_CHARS,
        allow_random_weights=True,
    )
    with running_server(settings, timeout=180) as url:
        yield url


def _client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def shipped(shipped_server: str) -> Iterator[httpx.Client]:
    yield from _client(shipped_server)


@pytest.fixture(scope="module")
def images(images_server: str) -> Iterator[httpx.Client]:
    yield from _client(images_server)


@pytest.fixture(scope="module")
def limited(limits_server: str) -> Iterator[httpx.Client]:
    yield from _client(limits_server)


@pytest.fixture(params=["digits", "images"])
def upload_endpoint(request: pytest.FixtureRequest) -> tuple[httpx.Client, str]:
    """Both upload endpoints, each on a server with default limits."""
    client = request.getfixturevalue("shipped" if request.param == "digits" else "images")
    return client, f"/api/v1/{request.param}"


@pytest.fixture(scope="module")
def predict_images(library: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The served stand-in's float signature, in this process: pixels -> probabilities."""
    signature = tf.saved_model.load(str(library / "resnet50" / "2")).signatures[
        resnet50.FLOAT_SIGNATURE
    ]

    def predict(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(signature(images=tf.constant(pixels))[resnet50.OUTPUT])

    return predict


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    return mnist_test()


# --- helpers ------------------------------------------------------------------------------


def ok(response: httpx.Response) -> Any:
    body = ok_json(response)
    assert response.headers["content-type"].startswith("application/json")
    return body


def failure(response: httpx.Response, status: int, *words: str) -> str:
    """Assert an error answer `status` with JSON `{"error": message}` (only that key) whose
    message contains every one of `words`; return the message."""
    message = error_message(response, status)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert set(response.json()) == {"error"}, response.text
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def ink_on_paper(digit: np.ndarray) -> bytes:
    """An MNIST digit as a PNG drawing: black ink on white paper."""
    return png(255 - digit)


def digit_parts(x: np.ndarray, indices: list[int]) -> list[Part]:
    return [file_part(f"mnist-{i}.png", ink_on_paper(x[i])) for i in indices]


def raw_multipart(
    client: httpx.Client, path: str, body: bytes, content_type: str
) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": content_type})


def assert_probabilities(values: list[float], count: int) -> None:
    assert len(values) == count
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values), values
    assert math.fsum(values) == pytest.approx(1.0, abs=1e-4)


def assert_ranked(ranked: list[dict[str, Any]], expected: np.ndarray, top_k: int) -> None:
    """`ranked` is the top `top_k` of the in-process probabilities `expected` [1000]."""
    assert len(ranked) == top_k
    scores = [entry["score"] for entry in ranked]
    assert scores == sorted(scores, reverse=True)
    for entry in ranked:
        assert set(entry) == {"class_id", "label", "score"}
        position = CLASS_POSITION[entry["class_id"]]
        assert entry["label"] == CLASSES[position][1]
        assert entry["score"] == pytest.approx(float(expected[position]), abs=1e-5)
    # the best `top_k` scores (robust to near-ties swapping places)
    best = np.sort(expected)[::-1][:top_k]
    np.testing.assert_allclose(scores, best, rtol=0, atol=1e-5)


def scores_by_class(ranked: list[dict[str, Any]]) -> np.ndarray:
    """A top_k=1000 answer as scores in class order."""
    scores = np.zeros(len(CLASSES))
    for entry in ranked:
        scores[CLASS_POSITION[entry["class_id"]]] = entry["score"]
    return scores


def vote_record(votes: list[str]) -> dict[str, str]:
    return dict(zip(VOTE_COLUMNS, votes, strict=True))


# --- /api/v1/digits -----------------------------------------------------------------------


def test_digit_uploads_are_recognised_in_order(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist
    indices = list(range(10))
    parts = digit_parts(x, indices)
    # a client that does not say the type (curl -F without ;type=) is fine too
    parts[3] = file_part("mnist-3.png", ink_on_paper(x[3]), GENERIC)
    body = ok(shipped.post(DIGITS, files=parts))
    assert (body["model"], body["version"]) == ("digits", shipped_version("digits"))
    predictions = body["predictions"]
    assert [p["file"] for p in predictions] == [f"mnist-{i}.png" for i in indices]
    assert [p["digit"] for p in predictions] == [int(y[i]) for i in indices]
    for prediction in predictions:
        assert set(prediction) == {
            "file", "digit", "confidence", "probabilities", "uncertain", "model_input"
        }  # fmt: skip
        assert prediction["model_input"] is None  # only with ?show_input=true
        assert prediction["uncertain"] is (prediction["confidence"] < UNCERTAIN_BELOW)
        assert_probabilities(prediction["probabilities"], 10)
        assert prediction["confidence"] == max(prediction["probabilities"])
        assert prediction["probabilities"][prediction["digit"]] == prediction["confidence"]


def test_digit_arrays_match_the_tf_serving_api_on_the_same_model(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist
    images = x[:8]
    body = ok(shipped.post(DIGITS, json={"images": images.tolist()}))
    assert (body["model"], body["version"]) == ("digits", shipped_version("digits"))
    predictions = body["predictions"]
    assert [p["digit"] for p in predictions] == y[:8].tolist()
    assert [p["file"] for p in predictions] == [None] * 8
    raw = ok(
        shipped.post(
            "/v1/models/digits:predict",
            json={"instances": (images[..., np.newaxis] / 255.0).tolist()},
        )
    )["predictions"]
    for prediction, expected in zip(predictions, raw, strict=True):
        assert prediction["confidence"] == max(prediction["probabilities"])
        np.testing.assert_allclose(prediction["probabilities"], expected, rtol=1e-5, atol=1e-7)


def test_digit_arrays_without_a_content_type_are_json(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist
    body = json.dumps({"images": [x[7].tolist()]}).encode()
    response = shipped.post(DIGITS, content=body)
    assert "content-type" not in response.request.headers
    answer = ok(response)
    assert answer["predictions"][0]["digit"] == int(y[7])


def test_digits_show_the_28x28_image_the_model_saw(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    """An upload's preview is mnist_pixels of the same picture; a JSON array's is the array."""
    x, _ = mnist
    parts = [*digit_parts(x, [4]), file_part("light-on-dark.png", png(x[5]))]
    uploaded = ok(shipped.post(DIGITS, params={"show_input": "true"}, files=parts))
    arrays = ok(
        shipped.post(DIGITS, params={"show_input": "true"}, json={"images": [x[6].tolist()]})
    )
    previews = [p["model_input"] for p in uploaded["predictions"] + arrays["predictions"]]
    expected = [
        mnist_pixels(Image.open(io.BytesIO(ink_on_paper(x[4])))),
        mnist_pixels(Image.open(io.BytesIO(png(x[5])))),
        x[6],
    ]
    for preview, pixels in zip(previews, expected, strict=True):
        prefix, _, encoded = preview.partition(",")
        assert prefix == "data:image/png;base64"
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
        assert shown.dtype == np.uint8 and shown.shape == (28, 28)
        np.testing.assert_array_equal(shown, pixels)


def test_uncertain_answers_are_flagged(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    """MNIST digits are answered with confidence; scribbles that are no digit are not."""
    x, _ = mnist
    rng = np.random.default_rng(5)
    scribbles = [(rng.random((28, 28)) < 0.25).astype(np.uint8) * 255 for _ in range(8)]
    body = ok(
        shipped.post(DIGITS, json={"images": [*x.tolist(), *(s.tolist() for s in scribbles)]})
    )
    flags = [p["uncertain"] for p in body["predictions"]]
    for prediction in body["predictions"]:
        assert prediction["uncertain"] is (prediction["confidence"] < UNCERTAIN_BELOW)
    # the model's card: about 1 % of MNIST test digits are flagged (its least clear ones)
    assert sum(flags[: len(x)]) <= 1, body["predictions"][: len(x)]
    assert sum(flags[len(x) :]) >= len(scribbles) // 2, body["predictions"][len(x) :]


def _with_pixel(x: np.ndarray, value: Any) -> dict[str, Any]:
    second = x[1].tolist()
    second[3][5] = value
    return {"images": [x[0].tolist(), second]}


def _with_rows(x: np.ndarray, rows: int) -> dict[str, Any]:
    second = x[1].tolist()[:rows] + [[0] * 28] * max(0, rows - 28)
    return {"images": [x[0].tolist(), second]}


def _with_row_of(x: np.ndarray, columns: int) -> dict[str, Any]:
    second = x[1].tolist()
    second[3] = second[3][:columns] + [0] * max(0, columns - 28)
    return {"images": [x[0].tolist(), second]}


@pytest.mark.parametrize(
    ("make_body", "location", "complaint"),
    [
        (lambda x: _with_rows(x, 27), "images.1", "28"),
        (lambda x: _with_rows(x, 29), "images.1", "28"),
        (lambda x: _with_row_of(x, 27), "images.1.3", "28"),
        (lambda x: _with_row_of(x, 30), "images.1.3", "28"),
        (lambda x: _with_pixel(x, 256), "images.1.3.5", "255"),
        (lambda x: _with_pixel(x, -1), "images.1.3.5", "0"),
        (lambda x: _with_pixel(x, 1.5), "images.1.3.5", "integer"),
        (lambda x: _with_pixel(x, True), "images.1.3.5", "integer"),
        (lambda x: _with_pixel(x, "7"), "images.1.3.5", "integer"),
        (lambda x: _with_pixel(x, None), "images.1.3.5", "integer"),
        (lambda x: {"images": []}, "images", "at least 1"),
        (lambda x: {"images": x[0].tolist()}, "images.0.0", "list"),  # one level missing
        (lambda x: {"instances": [x[0].tolist()]}, "images", "Field required"),
        (lambda x: {"images": [x[0].tolist()], "top_k": 3}, "top_k", "not permitted"),
        (lambda x: [x[0].tolist()], "body", "DigitArrays"),
    ],
    ids=[
        "27-rows",
        "29-rows",
        "27-columns",
        "30-columns",
        "256",
        "minus-1",
        "1.5",
        "true",
        "string",
        "null",
        "empty-list",
        "one-image-not-a-list",
        "missing-key",
        "extra-key",
        "not-an-object",
    ],
)
def test_digit_arrays_that_are_not_mnist_are_400_naming_the_place(
    shipped: httpx.Client,
    mnist: tuple[np.ndarray, np.ndarray],
    make_body: Callable[[np.ndarray], Any],
    location: str,
    complaint: str,
) -> None:
    message = failure(shipped.post(DIGITS, json=make_body(mnist[0])), 400, complaint)
    assert mentions(message, location), message


def test_digits_in_another_content_type_are_415(shipped: httpx.Client) -> None:
    response = shipped.post(DIGITS, content=b"7", headers={"content-type": "text/plain"})
    failure(response, 415, "'text/plain'", "multipart/form-data", "application/json")


def test_a_blank_drawing_is_400_naming_the_file(
    shipped: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    parts = digit_parts(mnist[0], [0])
    parts.append(file_part("blank page.png", png(np.full((64, 48), 255, np.uint8))))
    failure(shipped.post(DIGITS, files=parts), 400, "'blank page.png'", "no digit")


def test_a_large_drawing_is_scaled_like_mnist(
    limited: httpx.Client, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    # 500x500 is exactly the limits server's pixel limit: accepted
    x, y = mnist
    large = np.asarray(Image.fromarray(255 - x[5]).resize((500, 500), Image.Resampling.BICUBIC))
    assert large.size == MAX_PIXELS
    body = ok(limited.post(DIGITS, files=[file_part("large.png", png(large))]))
    assert body["predictions"][0]["digit"] == int(y[5])


# --- /api/v1/sentiment --------------------------------------------------------------------


def test_sentiment_of_a_positive_and_a_negative_review(shipped: httpx.Client) -> None:
    body = ok(shipped.post(SENTIMENT, json={"texts": [POSITIVE, NEGATIVE]}))
    assert (body["model"], body["version"]) == ("sentiment", shipped_version("sentiment"))
    positive, negative = body["predictions"]
    assert (positive["label"], negative["label"]) == ("positive", "negative")
    for prediction in (positive, negative):
        assert set(prediction) == {"label", "score", "probabilities"}
        assert set(prediction["probabilities"]) == {"positive", "negative"}
        assert_probabilities(list(prediction["probabilities"].values()), 2)
        assert prediction["score"] == prediction["probabilities"]["positive"]
    assert positive["score"] > 0.8
    assert negative["score"] < 0.2


def test_sentiment_of_unicode_text(shipped: httpx.Client) -> None:
    texts = [
        f"\U0001f3ac\U0001f37f {POSITIVE} \U0001f44d\U0001f469\u200d\U0001f467",  # emoji, ZWJ
        f"{NEGATIVE} \U0001f4a9\U0001f44e",
        "这部电影非常好看\uff0c演员的表演很出色\u3002",  # CJK, full-width punctuation
        "فيلم رائع جدا، أنصح الجميع بمشاهدته",  # Arabic (RTL)
        "\u05e1\u05e8\u05d8 \u05e0\u05d4\u05d3\u05e8 \u202eRTL override\u202c e\u0301",  # Hebrew
    ]
    body = ok(shipped.post(SENTIMENT, json={"texts": texts}))
    predictions = body["predictions"]
    assert len(predictions) == len(texts)
    assert [p["label"] for p in predictions[:2]] == ["positive", "negative"]
    for prediction in predictions:
        assert prediction["label"] in {"positive", "negative"}
        assert prediction["score"] == prediction["probabilities"]["positive"]
        assert_probabilities(list(prediction["probabilities"].values()), 2)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"texts": []}, ["texts", "at least 1"]),
        ({"texts": ["fine", ""]}, ["texts.1", "at least 1 character"]),
        ({"texts": ["fine", 5]}, ["texts.1", "string"]),
        ({"texts": ["fine", None]}, ["texts.1", "string"]),
        ({"texts": "a single string"}, ["texts", "list"]),
        ({"texts": ["fine"], "top_k": 3}, ["top_k", "not permitted"]),
        ({"text": ["fine"]}, ["texts", "Field required"]),
        ({"instances": ["fine"]}, ["instances"]),
        (["fine"], ["body"]),
    ],
    ids=["empty-list", "empty-text", "number", "null", "string", "extra", "typo", "tf", "list"],
)
def test_sentiment_requests_that_are_not_texts_are_400(
    shipped: httpx.Client, body: Any, words: list[str]
) -> None:
    failure(shipped.post(SENTIMENT, json=body), 400, *words)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"texts": ["unfinished', ["malformed JSON"]),
        (b'{"texts": ["a", ]}', ["malformed JSON"]),
        (b'{"texts": ["\\ud800 half of a surrogate pair"]}', ["malformed JSON", "surrogate"]),
        (b'{"texts": ["\xff\xfe not utf-8"]}', ["malformed JSON"]),
        (b"", ["empty"]),
    ],
    ids=["unterminated", "trailing-comma", "lone-surrogate", "not-utf8", "empty-body"],
)
def test_sentiment_bodies_that_are_not_json_are_400(
    shipped: httpx.Client, raw: bytes, words: list[str]
) -> None:
    response = shipped.post(SENTIMENT, content=raw, headers={"content-type": "application/json"})
    failure(response, 400, *words)


def test_sentiment_in_another_content_type_is_415(shipped: httpx.Client) -> None:
    response = shipped.post(SENTIMENT, content=POSITIVE, headers={"content-type": "text/plain"})
    failure(response, 415, "application/json", "'text/plain'")


# --- /api/v1/party ------------------------------------------------------------------------


def test_party_of_real_members_of_the_1984_house(shipped: httpx.Client) -> None:
    rows = house_votes()
    assert len(rows) == 435
    sample = rows[::44]  # 10 rows spread over the file
    assert {party for party, _ in sample} == {"democrat", "republican"}
    body = ok(shipped.post(PARTY, json={"votes": [vote_record(v) for _, v in sample]}))
    assert (body["model"], body["version"]) == ("votes", VOTES_VERSION)
    predictions = body["predictions"]
    assert len(predictions) == len(sample)
    for prediction in predictions:
        assert set(prediction) == {"party", "probabilities"}
        assert set(prediction["probabilities"]) == {"democrat", "republican"}
        assert_probabilities(list(prediction["probabilities"].values()), 2)
        best = max(prediction["probabilities"], key=prediction["probabilities"].__getitem__)
        assert prediction["party"] == best
    pairs = [(p["party"], party) for p, (party, _) in zip(predictions, sample, strict=True)]
    assert sum(said == party for said, party in pairs) >= 9, pairs


def test_party_encodes_votes_as_the_model_card_says(shipped: httpx.Client) -> None:
    """The task answer equals a TF Serving request of the votes encoded in `vote_columns`
    order (y = 1, n = -1, ? = 0): bill names are mapped to the right inputs."""
    rows = [votes for _, votes in house_votes()[:6]]
    body = ok(shipped.post(PARTY, json={"votes": [vote_record(v) for v in rows]}))
    encoded = [[{"y": 1.0, "n": -1.0, "?": 0.0}[vote] for vote in votes] for votes in rows]
    raw = ok(shipped.post("/v1/models/votes:predict", json={"instances": encoded}))
    for prediction, expected in zip(body["predictions"], raw["predictions"], strict=True):
        got = [prediction["probabilities"]["democrat"], prediction["probabilities"]["republican"]]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_a_missing_vote_is_the_same_as_leaving_the_bill_out(shipped: httpx.Client) -> None:
    party, votes = next(row for row in house_votes() if "?" in row[1])
    sent = vote_record(votes)
    left_out = {bill: vote for bill, vote in sent.items() if vote != "?"}
    assert len(left_out) < len(sent)
    body = ok(shipped.post(PARTY, json={"votes": [sent, left_out]}))
    with_question_mark, without = body["predictions"]
    assert with_question_mark == without
    assert with_question_mark["party"] == party


def test_a_record_without_a_yes_or_no_vote_is_400_naming_it(shipped: httpx.Client) -> None:
    """No evidence, no party (more in tests/test_votes.py)."""
    never = {bill: "?" for bill in VOTE_COLUMNS}
    for record in ({}, never):
        response = shipped.post(PARTY, json={"votes": [{"crime": "y"}, record]})
        failure(response, 400, "votes[1]", "at least one 'y' or 'n'")


def test_an_unknown_bill_is_400_listing_the_valid_names(shipped: httpx.Client) -> None:
    records = [{"crime": "y"}, {"crime": "n", "tax-cuts": "y"}]
    message = failure(shipped.post(PARTY, json={"votes": records}), 400, "votes[1]", "'tax-cuts'")
    for bill in VOTE_COLUMNS:
        assert mentions(message, bill), f"{bill} missing from {message!r}"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"votes": [{"crime": "maybe"}]}, ["votes.0.crime", "'y', 'n' or '?'"]),
        ({"votes": [{}, {"crime": 1}]}, ["votes.1.crime"]),
        ({"votes": [{}, {"crime": "Y"}]}, ["votes.1.crime"]),
        ({"votes": [["y"] * 16]}, ["votes.0", "dictionary"]),
        ({"votes": []}, ["votes", "at least 1"]),
        ({"votes": {"crime": "y"}}, ["votes", "list"]),
        ({"votes": [{}], "party": "whig"}, ["party", "not permitted"]),
    ],
    ids=["maybe", "number", "upper-case", "list", "empty", "not-a-list", "extra-key"],
)
def test_votes_that_are_not_y_n_or_missing_are_400(
    shipped: httpx.Client, body: Any, words: list[str]
) -> None:
    failure(shipped.post(PARTY, json=body), 400, *words)


# --- versions, on every endpoint of the shipped server -------------------------------------


SHIPPED_REQUESTS: dict[str, dict[str, Any]] = {
    DIGITS: {"images": [[[0] * 27 + [255]] * 28]},
    SENTIMENT: {"texts": [POSITIVE]},
    PARTY: {"votes": [{"crime": "y"}]},
}
SHIPPED_MODELS = {DIGITS: "digits", SENTIMENT: "sentiment", PARTY: "votes"}


@pytest.mark.parametrize("path", list(SHIPPED_REQUESTS))
def test_version_selects_a_served_version(shipped: httpx.Client, path: str) -> None:
    body = SHIPPED_REQUESTS[path]
    served = existing_versions(MODELS_DIR / SHIPPED_MODELS[path])[-1]
    assert ok(shipped.post(path, params={"version": served}, json=body))["version"] == served
    failure(shipped.post(path, params={"version": served + 1}, json=body), 404, str(served + 1))
    for bad in ("0", "-1", "one"):
        failure(shipped.post(path, params={"version": bad}, json=body), 400, "version")


# --- /api/v1/images -----------------------------------------------------------------------


def test_photos_are_ranked_like_the_model_in_process(
    images: httpx.Client, predict_images: Callable[[np.ndarray], np.ndarray]
) -> None:
    encoded = [photo_bytes(name) for name in PHOTOS]
    parts = [file_part(name, photo_bytes(name), "image/jpeg") for name in PHOTOS]
    body = ok(images.post(IMAGES, files=parts))
    assert (body["model"], body["version"], body["warning"]) == ("resnet50", 2, None)
    expected = predict_images(np.stack([keras_pixels(e) for e in encoded]))
    assert len(body["predictions"]) == len(PHOTOS)
    for ranked, row in zip(body["predictions"], expected, strict=True):
        assert_ranked(ranked, row, 5)
    # the photos are told apart: each answer is its own photo's
    assert len({ranked[0]["class_id"] for ranked in body["predictions"]}) > 1


def test_top_k_one_and_all(
    images: httpx.Client, predict_images: Callable[[np.ndarray], np.ndarray]
) -> None:
    encoded = photo_bytes("garden.jpg")
    expected = predict_images(keras_pixels(encoded)[np.newaxis])[0]
    part = [file_part("cat.jpeg", encoded, "image/jpeg")]
    one = ok(images.post(IMAGES, params={"top_k": 1}, files=part))["predictions"][0]
    assert_ranked(one, expected, 1)
    assert CLASS_POSITION[one[0]["class_id"]] == int(np.argmax(expected))
    every = ok(images.post(IMAGES, params={"top_k": 1000}, files=part))["predictions"][0]
    assert_ranked(every, expected, 1000)
    assert {entry["class_id"] for entry in every} == set(CLASS_POSITION)
    assert math.fsum(entry["score"] for entry in every) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("top_k", ["0", "1001", "-5", "five", "2.5"])
def test_top_k_outside_1_to_1000_is_400(images: httpx.Client, top_k: str) -> None:
    part = [file_part("car.jpg", photo_bytes("small.jpg"), "image/jpeg")]
    failure(images.post(IMAGES, params={"top_k": top_k}, files=part), 400, "top_k")


def test_random_weights_are_409_unless_allowed(images: httpx.Client) -> None:
    part = [file_part("car.jpg", photo_bytes("small.jpg"), "image/jpeg")]
    message = failure(images.post(IMAGES, params={"version": 1}, files=part), 409)
    for words in ("random weights", "modelserve train resnet50", "--allow-random-weights"):
        assert words in message, message
    assert ok(images.post(IMAGES, params={"version": 2}, files=part))["version"] == 2
    failure(images.post(IMAGES, params={"version": 3}, files=part), 404, "3")


def test_random_weights_answer_with_a_warning_when_allowed(limited: httpx.Client) -> None:
    names = ["small.jpg", "thumb.jpg"]  # small enough for the limits server
    parts = [file_part(name, photo_bytes(name), "image/jpeg") for name in names]
    body = ok(limited.post(IMAGES, params={"top_k": 3}, files=parts))
    assert (body["model"], body["version"]) == ("resnet50", 1)
    assert body["warning"] == resnet50.RANDOM_WEIGHTS_WARNING
    assert [len(ranked) for ranked in body["predictions"]] == [3, 3]


def test_images_without_resnet50_is_404_saying_how_to_get_it(shipped: httpx.Client) -> None:
    part = [file_part("car.jpg", photo_bytes("small.jpg"), "image/jpeg")]
    failure(shipped.post(IMAGES, files=part), 404, "'resnet50'", "modelserve train resnet50")


def test_exif_orientation_is_applied(images: httpx.Client) -> None:
    upright = np.asarray(Image.open(io.BytesIO(photo_bytes("street.jpg"))).convert("RGB"))
    rotated = exif_rotated_jpeg(upright)
    stored = Image.open(io.BytesIO(rotated))
    assert stored.getexif()[0x0112] == 6
    assert stored.size == upright.shape[:2]  # (width, height) of the stored pixels
    turned = encode(ImageOps.exif_transpose(stored), "PNG")  # the same pixels, upright
    as_stored = encode(Image.open(io.BytesIO(rotated)), "PNG")  # EXIF dropped
    parts = [
        file_part("phone.jpg", rotated, "image/jpeg"),
        file_part("upright.png", turned),
        file_part("sideways.png", as_stored),
    ]
    answers = ok(images.post(IMAGES, params={"top_k": 1000}, files=parts))["predictions"]
    phone, pre_rotated, sideways = (scores_by_class(ranked) for ranked in answers)
    np.testing.assert_allclose(phone, pre_rotated, rtol=0, atol=1e-6)
    assert np.abs(phone - sideways).max() > 1e-4  # orientation matters to this model


def test_every_image_format_and_mode_is_opened(
    images: httpx.Client, predict_images: Callable[[np.ndarray], np.ndarray]
) -> None:
    samples = format_samples()
    parts = [file_part(name, data, kind) for name, (data, kind) in samples.items()]
    body = ok(images.post(IMAGES, params={"top_k": 10}, files=parts))
    expected = predict_images(np.stack([keras_pixels(data) for data, _ in samples.values()]))
    assert len(body["predictions"]) == len(samples)
    for name, ranked, row in zip(samples, body["predictions"], expected, strict=True):
        try:
            assert_ranked(ranked, row, 10)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# --- upload errors, through both upload endpoints -----------------------------------------


def _jpeg(height: int = 180, width: int = 260) -> bytes:
    return encode(Image.fromarray(gradient(height, width)), "JPEG", quality=90)


def _png(height: int = 180, width: int = 260) -> bytes:
    return encode(Image.fromarray(gradient(height, width)), "PNG")


BAD_UPLOADS: dict[str, tuple[Part, int, list[str]]] = {
    "zero-bytes": (file_part("empty.png", b""), 400, ["'empty.png'", "empty"]),
    "truncated-png": (
        file_part("cut.png", _png()[: len(_png()) // 2]),
        400,
        ["'cut.png'", "truncated PNG"],
    ),
    "truncated-jpeg": (
        file_part("cut.jpg", _jpeg()[: len(_jpeg()) // 2], "image/jpeg"),
        400,
        ["'cut.jpg'", "truncated JPEG"],
    ),
    "text-named-png": (
        file_part("x.png", b"this is a text file, not a picture\n"),
        400,
        ["'x.png'", "not a JPEG, PNG, GIF, BMP or WebP image"],
    ),
    "tiff": (
        file_part("scan.tif", encode(Image.fromarray(gradient(40, 60)), "TIFF"), GENERIC),
        400,
        ["'scan.tif'", "not a JPEG, PNG, GIF, BMP or WebP image"],
    ),
    "declared-tiff": (
        file_part("scan.tif", encode(Image.fromarray(gradient(40, 60)), "TIFF"), "image/tiff"),
        415,
        ["'scan.tif'", "'image/tiff'"],
    ),
    "declared-text": (
        file_part("notes.png", _png(), "text/plain"),
        415,
        ["'notes.png'", "'text/plain'"],
    ),
    "pillow-bomb": (
        file_part("bomb.png", png_header_bomb(100_000, 100_000)),
        413,
        ["'bomb.png'", "40,000,000 pixel limit"],
    ),
    "over-pixel-limit": (
        file_part("huge.png", png_header_bomb(8000, 8000)),
        413,
        ["'huge.png'", "8000x8000", "40,000,000 pixel limit"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_upload_is_rejected_naming_the_file(
    upload_endpoint: tuple[httpx.Client, str], mnist: tuple[np.ndarray, np.ndarray], case: str
) -> None:
    client, path = upload_endpoint
    bad, status, words = BAD_UPLOADS[case]
    parts = [file_part("good.png", ink_on_paper(mnist[0][0])), bad]  # the second one is bad
    started = time.monotonic()
    response = client.post(path, files=parts)
    elapsed = time.monotonic() - started
    message = failure(response, status, *words)
    assert "good.png" not in message
    assert elapsed < 5, f"{case} took {elapsed:.1f} s: the image was decoded"


def test_a_good_upload_passes_where_the_bad_ones_fail(
    upload_endpoint: tuple[httpx.Client, str], mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    """The counterpart of the cases above: the same request shape with valid files is 200."""
    client, path = upload_endpoint
    two = encode(Image.fromarray(255 - mnist[0][1]).convert("RGB"), "JPEG", quality=90)
    parts = [file_part("good.png", ink_on_paper(mnist[0][0])), file_part("two.jpg", two)]
    predictions = ok(client.post(path, files=parts))["predictions"]
    assert len(predictions) == 2


def _truncated_multipart(parts: list[Part], cut: int) -> tuple[bytes, str]:
    body, content_type = multipart(parts)
    return body[: len(body) - cut], content_type


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda good: (b"", "multipart/form-data; boundary=xyz"), 400, ["closing boundary"]),
        (lambda good: (b"--xyz--\r\n", "multipart/form-data; boundary=xyz"), 400, ["no files"]),
        (lambda good: (multipart(good)[0], "multipart/form-data"), 400, ["boundary"]),
        (lambda good: (b"garbage", "multipart/form-data; boundary=xyz"), 400, ["multipart"]),
        # the closing delimiter missing, then half of the second file: never a silent 200
        (lambda good: _truncated_multipart(good, 10), 400, ["closing boundary"]),
        (lambda good: _truncated_multipart(good, 150), 400, ["closing boundary"]),
    ],
    ids=["empty-body", "no-parts", "no-boundary", "garbage", "no-closing", "half-a-file"],
)
def test_a_malformed_multipart_body_is_400(
    upload_endpoint: tuple[httpx.Client, str],
    mnist: tuple[np.ndarray, np.ndarray],
    make: Callable[[list[Part]], tuple[bytes, str]],
    status: int,
    words: list[str],
) -> None:
    client, path = upload_endpoint
    body, content_type = make(digit_parts(mnist[0], [0, 1]))
    failure(raw_multipart(client, path, body, content_type), status, *words)


@pytest.mark.parametrize(
    ("make_parts", "words"),
    [
        (lambda good: [*good, ("top_k", (None, b"3", None))], ["only file fields", "top_k"]),
        (lambda good: [good[0], file_part("b.png", good[1][1][1], field="image")], ["'image'"]),
    ],
    ids=["form-field", "wrong-field-name"],
)
def test_multipart_fields_other_than_file_are_400(
    upload_endpoint: tuple[httpx.Client, str],
    mnist: tuple[np.ndarray, np.ndarray],
    make_parts: Callable[[list[Part]], list[Any]],
    words: list[str],
) -> None:
    client, path = upload_endpoint
    failure(client.post(path, files=make_parts(digit_parts(mnist[0], [0, 1]))), 400, *words)


def test_images_takes_only_multipart(images: httpx.Client) -> None:
    failure(images.post(IMAGES, json={"images": []}), 415, "multipart/form-data", "json")


# --- limits ---------------------------------------------------------------------------------


def _items_body(path: str, count: int, x: np.ndarray) -> dict[str, Any]:
    if path == DIGITS:
        return {"images": x[:count].tolist()}
    if path == SENTIMENT:
        return {"texts": ["A fine film."] * count}
    return {"votes": [{"crime": "y"}] * count}


@pytest.mark.parametrize("path", [DIGITS, SENTIMENT, PARTY])
def test_more_items_than_max_items_is_413(
    limited: httpx.Client, mnist: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    x = mnist[0]
    assert len(ok(limited.post(path, json=_items_body(path, MAX_ITEMS, x)))["predictions"]) == 3
    message = failure(limited.post(path, json=_items_body(path, MAX_ITEMS + 1, x)), 413)
    assert mentions(message, str(MAX_ITEMS + 1)) and mentions(message, str(MAX_ITEMS)), message


@pytest.mark.parametrize("path", [DIGITS, IMAGES])
def test_more_files_than_max_upload_files_is_413(
    limited: httpx.Client, mnist: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    parts = digit_parts(mnist[0], list(range(MAX_FILES + 1)))
    assert len(ok(limited.post(path, files=parts[:MAX_FILES]))["predictions"]) == MAX_FILES
    failure(limited.post(path, files=parts), 413, f"more than {MAX_FILES} files")


@pytest.mark.parametrize("path", [DIGITS, IMAGES])
def test_an_image_over_max_image_pixels_is_413_naming_it(
    limited: httpx.Client, mnist: tuple[np.ndarray, np.ndarray], path: str
) -> None:
    parts = [
        file_part("ok.png", ink_on_paper(mnist[0][0])),
        file_part("wide.png", png(np.full((500, 600), 255, np.uint8))),
    ]
    failure(limited.post(path, files=parts), 413, "'wide.png'", "600x500", "250,000 pixel limit")


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", [DIGITS, IMAGES])
def test_an_upload_over_max_request_bytes_is_413(
    limited: httpx.Client, mnist: tuple[np.ndarray, np.ndarray], path: str, streamed: bool
) -> None:
    body, content_type = multipart([file_part("noise.png", noise_png(150, 200))])
    assert len(body) > MAX_BYTES
    content = chunks(body) if streamed else body
    response = limited.post(path, content=content, headers={"content-type": content_type})
    assert ("content-length" in response.request.headers) is not streamed
    message = failure(response, 413, f"{MAX_BYTES} byte limit")
    assert (f"{len(body)} bytes" in message) is not streamed, message  # known before reading
    # just under the limit is fine
    small, content_type = multipart([file_part("digit.png", ink_on_paper(mnist[0][0]))])
    assert len(small) < MAX_BYTES
    content = chunks(small) if streamed else small
    ok(limited.post(path, content=content, headers={"content-type": content_type}))


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_json_over_max_request_bytes_is_413(limited: httpx.Client, streamed: bool) -> None:
    body = json.dumps({"texts": ["x" * 50] * 2000}).encode()
    assert len(body) > MAX_BYTES
    content = chunks(body) if streamed else body
    response = limited.post(
        SENTIMENT, content=content, headers={"content-type": "application/json"}
    )
    assert ("content-length" in response.request.headers) is not streamed
    message = failure(response, 413, f"{MAX_BYTES} byte limit")
    assert (f"{len(body)} bytes" in message) is not streamed, message


def test_a_text_over_max_text_chars_is_413_naming_it(limited: httpx.Client) -> None:
    emoji = "\U0001f600"  # one character, four bytes of UTF-8
    at_limit = ok(limited.post(SENTIMENT, json={"texts": ["a" * MAX_CHARS, emoji * MAX_CHARS]}))
    assert len(at_limit["predictions"]) == 2
    for long_text in ("a" * (MAX_CHARS + 1), emoji * (MAX_CHARS + 1)):
        response = limited.post(SENTIMENT, json={"texts": ["short and fine", long_text]})
        message = failure(response, 413, "texts[1]", f"{MAX_CHARS + 1} characters")
        assert mentions(message, str(MAX_CHARS)), message


# --- task and TF Serving requests together ------------------------------------------------


def test_task_and_tf_serving_requests_in_flight_together(
    shipped_server: str, mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist

    def upload(index: int) -> int:
        part = file_part(f"{index}.png", ink_on_paper(x[index]))
        response = httpx.post(f"{shipped_server}{DIGITS}", files=[part], timeout=120)
        return int(ok(response)["predictions"][0]["digit"])

    def tf_serving(index: int) -> int:
        instances = (x[index : index + 1, :, :, np.newaxis] / 255.0).tolist()
        response = httpx.post(
            f"{shipped_server}/v1/models/digits:predict", json={"instances": instances}, timeout=120
        )
        return int(np.argmax(ok(response)["predictions"][0]))

    indices = [k % len(x) for k in range(24)]
    with ThreadPoolExecutor(max_workers=len(indices)) as pool:
        futures = [
            pool.submit(upload if k % 3 else tf_serving, index) for k, index in enumerate(indices)
        ]
        answers = [future.result() for future in futures]
    assert answers == [int(y[index]) for index in indices]


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_documents_the_task_api(shipped: httpx.Client) -> None:
    document = ok(shipped.get("/openapi.json"))
    paths = document["paths"]
    operations = {path: paths[path]["post"] for path in (DIGITS, IMAGES, SENTIMENT, PARTY)}
    for path, operation in operations.items():
        parameters = {p["name"]: p for p in operation.get("parameters", [])}
        assert parameters["version"]["in"] == "query", path
        assert parameters["version"]["required"] is False
        for status in ("400", "404", "409", "413", "415", "429", "503", "504"):
            response = operation["responses"][status]
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorAnswer"}, (path, status)
            assert response["description"]
        assert operation["requestBody"]["required"] is True
    error = document["components"]["schemas"]["ErrorAnswer"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["type"] == "string"

    top_k = {p["name"]: p for p in operations[IMAGES]["parameters"]}["top_k"]
    assert (top_k["in"], top_k["schema"]["minimum"], top_k["schema"]["maximum"]) == (
        "query",
        1,
        1000,
    )
    assert top_k["schema"]["default"] == 5
    assert "top_k" not in {p["name"] for p in operations[DIGITS]["parameters"]}

    for path in (DIGITS, IMAGES):
        upload = operations[path]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert upload["required"] == ["file"]
        assert upload["properties"]["file"]["items"]["format"] == "binary"
    assert set(operations[IMAGES]["requestBody"]["content"]) == {"multipart/form-data"}
    assert set(operations[DIGITS]["requestBody"]["content"]) == {
        "multipart/form-data",
        "application/json",
    }
    for path in (DIGITS, SENTIMENT, PARTY):
        examples = operations[path]["requestBody"]["content"]["application/json"]["examples"]
        assert examples, path


@pytest.mark.parametrize("path", [DIGITS, SENTIMENT, PARTY])
def test_the_documented_examples_work(shipped: httpx.Client, path: str) -> None:
    document = ok(shipped.get("/openapi.json"))
    content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    for example in content["examples"].values():
        predictions = ok(shipped.post(path, json=example["value"]))["predictions"]
        assert predictions
        if path == DIGITS:
            assert [p["digit"] for p in predictions] == [7]  # the example draws a 7
        if path == SENTIMENT:
            assert [p["label"] for p in predictions] == ["positive", "negative"]
