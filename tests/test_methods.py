"""Wrong methods, against a real server: a method a route does not take is a 405 with `Allow`
naming the methods that path does take and the usual `{"error": "..."}` body, on every route
(TF Serving's, V2's, the task API's, admin, health, docs and static files); a path no route has
stays a 404. TF Serving's GET and POST routes share path templates, so names with a colon get
a check of their own: a known method after the colon is a call, anything else is a clear 404.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.server import ModelServer
from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.saved_models import copy_versions, write_config
from tests.server import error_message, mentions, running_server

pytest_plugins = ["tests.gateway_fixtures"]

GET, POST = ("GET",), ("POST",)
STATIC = ("GET", "HEAD")
PROBE = ("GET", "HEAD")  # load balancers and uptime checkers probe with HEAD too
# one concrete path per route (per method of TF Serving's calls), and what it takes
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/models/plus": GET,
    "/v1/models/plus/versions/1": GET,
    "/v1/models/plus/labels/stable": GET,
    "/v1/models/plus/metadata": GET,
    "/v1/models/plus/versions/1/metadata": GET,
    "/v1/models/plus/labels/stable/metadata": GET,
    "/v1/models/plus:predict": POST,
    "/v1/models/plus:classify": POST,
    "/v1/models/plus:regress": POST,
    "/v1/models/plus/versions/1:predict": POST,
    "/v1/models/plus/labels/stable:regress": POST,
    "/v2": GET,
    "/v2/models/plus": GET,
    "/v2/models/plus/versions/1": GET,
    "/v2/models/plus/ready": GET,
    "/v2/models/plus/versions/1/ready": GET,
    "/v2/models/plus/config": GET,
    "/v2/models/plus/versions/1/config": GET,
    "/v2/models/stats": GET,
    "/v2/models/plus/stats": GET,
    "/v2/models/plus/versions/1/stats": GET,
    "/v2/models/plus/infer": POST,
    "/v2/models/plus/versions/1/infer": POST,
    "/v2/health/live": PROBE,
    "/v2/health/ready": PROBE,
    "/healthz": PROBE,
    "/readyz": PROBE,
    "/metrics": GET,
    "/api/v1/models": GET,
    "/api/v1/digits": POST,
    "/api/v1/images": POST,
    "/api/v1/sentiment": POST,
    "/api/v1/party": POST,
    "/admin/reload": POST,
    "/admin/models/plus/unload": POST,
    "/admin/models/plus/load": POST,
    "/admin/config": GET,
    "/": GET,
    "/docs": GET,
    "/docs/oauth2-redirect": GET,
    "/redoc": GET,
    "/openapi.json": STATIC,
    "/static/app.js": STATIC,
    "/static-offline-docs/swagger-ui.css": STATIC,
    "/static-offline-docs/redoc.standalone.js": STATIC,
}
TRIED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CASES = [(path, m) for path, allowed in ROUTES.items() for m in TRIED if m not in allowed]


@pytest.fixture(scope="module")
def server(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`plus` (version 1, label stable), admin routes open (no keys), no CORS (so OPTIONS is
    just another method)."""
    root = tmp_path_factory.mktemp("methods")
    copy_versions(model_library, root / "repo" / "plus", "plus", [1])
    config = write_config(
        root / "serving.yaml", [{"name": "plus", "version_labels": {"stable": 1}}]
    )
    settings = Settings(
        model_base_path=root / "repo",
        config=config,
        poll_interval_seconds=0,
        admin_without_keys=True,
    )
    with running_server(settings) as url:
        yield url


def allowed(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers.get("allow", "").split(",")} - {""}


def test_the_table_has_a_path_for_every_documented_route() -> None:
    """A route added later is in ROUTES too, or this fails."""
    document = ModelServer(Settings(model_base_path=MODELS_DIR)).app.openapi()
    for template, operations in document["paths"].items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        methods = {method.upper() for method in operations}
        covered = [p for p in ROUTES if re.fullmatch(pattern, p) and methods <= set(ROUTES[p])]
        assert covered, f"{sorted(methods)} {template}: no path of it in ROUTES"


def test_every_documented_operation_has_an_id_of_its_own() -> None:
    """Swagger UI expands the operations of a shared id together (one route taking GET and HEAD
    was documented as two operations under one id)."""
    document = ModelServer(Settings(model_base_path=MODELS_DIR)).app.openapi()
    ids = [
        operation["operationId"] for ops in document["paths"].values() for operation in ops.values()
    ]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize(("path", "method"), CASES)
def test_a_wrong_method_is_a_405_naming_the_right_ones(
    client: httpx.Client, path: str, method: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405, f"{method} {path}: {response.status_code} {response.text}"
    assert allowed(response) == set(ROUTES[path]), response.headers
    if method != "HEAD":  # a HEAD answer has no body
        message = error_message(response, 405)
        assert mentions(message, method), message
        assert all(mentions(message, m) for m in ROUTES[path]), message


def test_the_right_methods_still_answer(client: httpx.Client) -> None:
    """The 405s above come from the method, not from paths that reach nothing."""
    assert client.get("/v1/models/plus").status_code == 200
    assert client.get("/v1/models/plus/labels/stable/metadata").status_code == 200
    predicted = client.post("/v1/models/plus:predict", json={"instances": [1.0]})
    assert predicted.status_code == 200, predicted.text
    versioned = client.post("/v1/models/plus/labels/stable:predict", json={"instances": [1.0]})
    assert versioned.status_code == 200, versioned.text
    assert client.get("/v2/models/plus/versions/1/ready").status_code == 200
    assert client.get("/admin/config").status_code == 200
    assert client.head("/static/app.js").status_code == 200
    script = client.get("/static-offline-docs/redoc.standalone.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javas")
    assert client.head("/static-offline-docs/redoc.standalone.js").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"])
def test_a_probe_answers_head_as_it_answers_get_without_the_body(
    client: httpx.Client, path: str
) -> None:
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200, (path, head.status_code, got.text)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"] == "application/json"
    assert int(head.headers["content-length"]) == len(got.content)


def test_get_on_a_call_is_not_the_status_of_a_model_named_so(client: httpx.Client) -> None:
    """The issue: GET /v1/models/votes:predict answered 404 "model 'votes:predict' is not
    served" (the status route took the whole segment as a name)."""
    for path in ("/v1/models/plus:predict", "/v1/models/nosuch:predict"):
        response = client.get(path)
        assert response.status_code == 405 and allowed(response) == {"POST"}, response.text


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_name_with_an_unknown_method_takes_both_get_and_post(
    client: httpx.Client, method: str
) -> None:
    """/v1/models/plus:bogus is a status path (a model name, though never a valid one) and a
    call path (of an unknown method): both methods are allowed there."""
    response = client.request(method, "/v1/models/plus:bogus")
    error_message(response, 405)
    assert allowed(response) == {"GET", "POST"}


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        # a mistyped method, or a call sent as GET: names have no colon, calls are POSTs
        ("GET", "/v1/models/plus:bogus", 404, ["plus:bogus", "POST", ":predict"]),
        ("GET", "/v1/models/plus:", 404, ["POST", ":predict"]),
        ("POST", "/v1/models/plus:bogus", 404, ["plus:bogus", ":predict", ":classify"]),
        ("POST", "/v1/models/plus:Predict", 404, [":predict"]),  # methods are lower case
        ("POST", "/v1/models/plus:", 404, [":predict"]),
        ("POST", "/v1/models/plus/versions/1:bogus", 404, ["1:bogus", ":predict"]),
        ("POST", "/v1/models/plus/labels/stable:bogus", 404, ["stable:bogus", ":predict"]),
        ("GET", "/v1/models/plus/versions/1:bogus", 400, ["1:bogus", "positive integer"]),
        ("GET", "/v1/models/plus/labels/stable:bogus", 404, ["stable:bogus", "stable"]),
        ("GET", "/v1/models/plus:predict/metadata", 404, ["plus:predict", "plus"]),
        ("POST", "/v1/models/:predict", 404, ["not served", "plus"]),
        ("GET", "/v2/models/plus:predict", 404, ["plus:predict", "plus"]),
        ("POST", "/v2/models/plus:predict/infer", 404, ["plus:predict", "plus"]),
    ],
)
def test_names_with_a_colon_that_is_no_method_get_a_clear_answer(
    client: httpx.Client, method: str, path: str, status: int, words: list[str]
) -> None:
    response = client.request(method, path, json={"instances": [1.0]})
    message = error_message(response, status)
    assert "allow" not in response.headers
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_a_path_no_route_has_is_a_404_whatever_the_method(
    client: httpx.Client, method: str
) -> None:
    for path in ("/no/such/route", "/v1/models/plus/versions", "/v1/models/plus/nosuch"):
        response = client.request(method, path)
        error_message(response, 404)
        assert "allow" not in response.headers
