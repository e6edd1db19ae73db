"""Hostile and malformed input on every protocol, one case per input (tests/nasty_inputs.py):
each gets its documented status, never a 5xx, with a useful `{"error": ...}` message (REST) or
INVALID_ARGUMENT (gRPC, never INTERNAL or UNKNOWN); the odd but valid ones get 200/OK.

A 100 MB body is refused with 413 before it is read: the test sends its headers and only the
first megabyte, and the answer comes back. Sent in full and chunked (no length declared), it
is refused once the limit is passed.
"""

from __future__ import annotations

import http.client
import json
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.errors import PayloadTooLargeError
from service.tasks.uploads import Upload, open_image
from tests.nasty_inputs import (
    HUGE_BYTES,
    MB,
    GrpcCase,
    RestCase,
    grpc_cases,
    huge_body,
    rest_cases,
    serve_repository,
)
from tests.server import error_message, grpc_target
from tests.task_models import png_header_bomb

ANSWER_SECONDS = 20  # every case, even 100 MB, is answered well within this (no hang)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_repository(tmp_path_factory.mktemp("nasty")) as url:
        yield url


def send(url: str, case: RestCase) -> httpx.Response:
    if case.huge and case.declared:
        return send_first_megabyte(url, case)
    content = huge_body(case) if case.huge else case.body  # huge: chunked, no length
    with httpx.Client(base_url=url, timeout=ANSWER_SECONDS) as client:
        return client.post(case.path, content=content, headers=case.request_headers())


def send_first_megabyte(url: str, case: RestCase) -> httpx.Response:
    """Declare HUGE_BYTES, send one megabyte of them, and read the answer: it can only come
    if the server decided without reading the body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=ANSWER_SECONDS)
    try:
        connection.putrequest("POST", case.path)
        for name, value in case.request_headers().items():
            connection.putheader(name, value)
        connection.putheader("content-length", str(HUGE_BYTES))
        connection.endheaders(next(huge_body(case)))
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


@pytest.mark.parametrize("case", rest_cases(), ids=lambda case: case.id)
def test_rest(hostile_server: str, case: RestCase) -> None:
    started = time.monotonic()
    response = send(hostile_server, case)
    elapsed = time.monotonic() - started
    assert elapsed < ANSWER_SECONDS, f"{case.id} took {elapsed:.1f} s"
    if case.status == 200:
        assert case.why, "a valid oddity says why it is valid"
        assert response.status_code == 200, response.text
        answer = json.loads(response.text)  # TF Serving writes NaN as a bare token
        assert answer.get("predictions") or answer.get("outputs"), answer
        if case.digit is not None:
            assert [p["digit"] for p in answer["predictions"]] == [case.digit], answer
        return
    message = error_message(response, case.status)
    assert case.mentions, "an error case says what its message must name"
    for word in case.mentions:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


@pytest.mark.parametrize("case", grpc_cases(), ids=lambda case: case.id)
def test_grpc(hostile_server: str, case: GrpcCase) -> None:
    with grpc.insecure_channel(grpc_target(hostile_server)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            answer = stub.Predict(case.request, timeout=ANSWER_SECONDS)
        except grpc.RpcError as error:
            code, details = error.code().name, error.details() or ""
        else:
            code, details = "OK", ""
            assert answer.outputs, answer
    assert code == case.code, f"{code}: {details}"
    for word in case.mentions:
        assert word.lower() in details.lower(), f"{word!r} not in {details!r}"


def test_the_corpus_covers_every_protocol() -> None:
    """So that the counts in the report mean something: every protocol, errors and oddities."""
    prefixes = Counter(case.path.split("/")[1] for case in rest_cases())
    assert {"v1", "v2", "api"} <= set(prefixes), prefixes
    statuses = Counter(case.status for case in rest_cases())
    assert {200, 400, 413, 415} <= set(statuses), statuses
    assert sum(case.huge for case in rest_cases()) >= 4
    codes = Counter(case.code for case in grpc_cases())
    assert codes["INVALID_ARGUMENT"] >= 15 and codes["OK"] >= 1, codes
    assert MB * 64 < HUGE_BYTES  # above the default max_request_bytes


def test_image_sizes_leave_no_trace_in_the_warnings_registry() -> None:
    """Pillow warns about images between its limit and twice it, and Python's warnings registry
    keeps every distinct message for good: a client sending many sizes grows the server's
    memory. The gateway checks sizes itself, so no warning is raised at all."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for width in (10_000, 10_001, 10_002):
            upload = Upload("big.png", "image/png", png_header_bomb(width, 10_000))
            with pytest.raises(PayloadTooLargeError, match=f"{width}x10000"):
                open_image(upload, max_pixels=40_000_000)
    assert not caught, [str(w.message) for w in caught]
