"""The inference routes' direct path (service.http.inference_lane): it takes every inference
route, and only those, through a real server; what they answer is tested by the protocol tests
(test_gateway_tfserving, test_gateway_v2, test_methods, ...), which all run through it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from service.http import tfserving_rest, v2_rest
from service.http.app import ERROR_HANDLERS
from service.http.inference_lane import LANE_ENDPOINTS, InferenceLane
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
