"""The inference routes' direct path (service.http.inference_lane): it takes every inference
route, and only those, through a real server; what they answer is tested by the protocol tests
(test_gateway_tfserving, test_gateway_v2, test_methods, ...), which all run through it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from service.http import tfserving_rest, v2_rest
from service.http.app import ERROR_HANDLERS, asgi_app
from service.http.inference_lane import LANE_ENDPOINTS, DirectLane, InferenceLane
from service.server import ModelServer
from service.settings import Settings
from tests.saved_models import export_affine
from tests.server import running_server


def test_the_lane_finds_every_inference_route_of_the_routers() -> None:
    routes = [*tfserving_rest.router.routes, *v2_rest.router.routes]
    lane = InferenceLane(lambda *args: None, routes=routes, error_handlers=ERROR_HANDLERS)  # type: ignore[arg-type,return-value]
    assert {route.endpoint for route in lane.routes} == LANE_ENDPOINTS
    assert len(lane.routes) == len(LANE_ENDPOINTS)


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The route templates FastAPI's router handled (APIRoute.handle), in order."""
    handled: list[str] = []
    original = APIRoute.handle

    async def handle(self: APIRoute, *args: Any) -> None:
        handled.append(self.path)
        await original(self, *args)

    monkeypatch.setattr(APIRoute, "handle", handle)
    return handled


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    export_affine(tmp_path, "plus", 1)
    with running_server(Settings(model_base_path=tmp_path)) as url:
        yield url


def test_inference_requests_skip_the_router_and_the_others_do_not(
    server: str, routed: list[str]
) -> None:
    instance = {"instances": [1.0, 2.0]}
    v2 = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    answers = {
        path: httpx.post(server + path, json=body)
        for path, body in (
            ("/v1/models/plus:predict", instance),
            ("/v1/models/plus/versions/1:predict", instance),
            ("/v1/models/plus/labels/stable:predict", instance),  # no such label
            ("/v2/models/plus/infer", v2),
            ("/v2/models/plus/versions/1/infer", v2),
            ("/v2/models/plus/versions/x/infer", v2),  # not a version
        )
    }
    assert [answer.status_code for answer in answers.values()] == [200, 200, 404, 200, 200, 400]
    assert answers["/v1/models/plus:predict"].json() == {"predictions": [2.5, 3.0]}
    assert answers["/v2/models/plus/infer"].json()["outputs"][0]["data"] == [2.5, 3.0]
    assert "label" in answers["/v1/models/plus/labels/stable:predict"].json()["error"]
    assert "version" in answers["/v2/models/plus/versions/x/infer"].json()["error"]
    assert routed == []
    assert httpx.get(f"{server}/v1/models/plus").status_code == 200
    assert httpx.get(f"{server}/v1/models/plus:predict").status_code == 405  # GET: the router's
    assert routed == ["/v1/models/{model:tfs_target}", "/v1/models/{model_method:tfs_call}"]


@pytest.fixture
def app_layers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that went through FastAPI's own app (FastAPI.__call__)."""
    seen: list[str] = []
    original = FastAPI.__call__

    async def call(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", call)
    return seen


def test_uvicorn_takes_inference_requests_past_fastapis_layers(
    server: str, app_layers: list[str]
) -> None:
    """DirectLane: an inference request reaches the gate and the lane without FastAPI's and
    Starlette's layers around them, with the gate's headers; everything else goes through."""
    body = {"instances": [1.0]}
    answer = httpx.post(f"{server}/v1/models/plus:predict", json=body)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"]  # the gate ran
    assert "content-security-policy" in answer.headers
    assert app_layers == []
    assert httpx.post(f"{server}/v1/models/plus:nonsense", json=body).status_code == 404
    assert app_layers == []  # a lane route: its endpoint says the method is unknown
    assert httpx.get(f"{server}/v1/models/plus").status_code == 200
    assert httpx.get(f"{server}/v2/models/plus").status_code == 200
    assert app_layers == ["/v1/models/plus", "/v2/models/plus"]


def test_an_unexpected_error_on_the_direct_path_is_a_json_500(
    server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What Starlette's catch-all does for the app, the gate does for DirectLane's requests:
    the app's handler for Exception answers (logged with its traceback), and the server goes
    on."""

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(v2_rest, "_answer", broken)
    v2 = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    with caplog.at_level(logging.ERROR, logger="service.http.app"):
        answer = httpx.post(f"{server}/v2/models/plus/infer", json=v2)
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error: RuntimeError"}
    assert answer.headers["x-request-id"]  # answered inside the gate, as every other answer
    assert "content-security-policy" in answer.headers
    assert "RuntimeError: a bug" in caplog.text
    monkeypatch.undo()
    assert httpx.post(f"{server}/v2/models/plus/infer", json=v2).status_code == 200


def test_with_cors_uvicorn_runs_the_app_itself(tmp_path: Path) -> None:
    """CORS puts its layers outside the gate: then nothing may skip them."""
    export_affine(tmp_path, "plus", 1)
    plain = ModelServer(Settings(model_base_path=tmp_path))
    assert isinstance(asgi_app(plain), DirectLane)
    cors = ModelServer(Settings(model_base_path=tmp_path, cors_origins=["https://example.org"]))
    assert asgi_app(cors) is cors.app
