"""API keys, admin routes and CORS against real servers on loopback (REST with httpx, gRPC with
real channels).

Servers: `keyed` (keys from MODELSERVE_API_KEYS-style text and from a keys file, CORS for one
origin), `locked` (keys, and health and metrics need one too), `open_admin` (no keys, admin
routes allowed by `admin_without_keys`), and the session's `protocol_server` (defaults: no keys,
no CORS, admin routes refused).
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr, ValidationError
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.auth import MIN_KEY_LENGTH, ApiKeyError, ApiKeys, load_api_keys, presented_key
from service.settings import Settings
from tests.saved_models import copy_versions, write_config
from tests.server import error_message, grpc_target, running_server, wait_for
from tests.test_cli import run
from tests.test_grpc import plus_request

pytest_plugins = ["tests.gateway_fixtures"]

KEY_ENV, KEY_ENV2, KEY_FILE = (secrets.token_hex(16) for _ in range(3))
WRONG = secrets.token_hex(16)
ORIGIN = "https://app.example.com"
Code = grpc.StatusCode
Health = health_pb2.HealthCheckResponse.ServingStatus

# every kind of route that needs a key once keys are on (unknown paths included)
KEYED_ROUTES = [
    ("GET", "/v1/models/plus"),
    ("GET", "/v1/models/plus/metadata"),
    ("POST", "/v1/models/plus:predict"),
    ("GET", "/v2"),
    ("GET", "/v2/models/plus"),
    ("GET", "/v2/models/plus/ready"),
    ("POST", "/v2/models/plus/infer"),
    ("GET", "/api/v1/models"),
    ("POST", "/api/v1/sentiment"),
    ("GET", "/admin/config"),
    ("POST", "/admin/reload"),
    ("POST", "/admin/models/plus/unload"),
    ("POST", "/admin/models/plus/load"),
    ("GET", "/no/such/route"),
]
PAGE_ROUTES = ["/", "/static/app.js", "/docs", "/redoc", "/openapi.json"]
HEALTH_ROUTES = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]
PREDICT_BODY = {"instances": [1.0, 2.0]}


@dataclass
class Server:
    url: str
    repo: Path

    @property
    def target(self) -> str:
        return grpc_target(self.url)


def keyed_headers(key: str = KEY_ENV) -> dict[str, str]:
    return {"X-API-Key": key}


def wait_ready(url: str, headers: dict[str, str]) -> None:
    """/readyz with a key (running_server's own wait asks without one)."""
    wait_for(
        lambda: httpx.get(f"{url}/readyz", headers=headers).status_code == 200,
        timeout=60,
        what=f"{url}/readyz",
    )


@pytest.fixture(scope="module")
def keyed(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("keyed")
    repo = root / "repo"
    copy_versions(model_library, repo / "plus", "plus", [1, 2])
    copy_versions(model_library, repo / "grow", "plus", [1])
    config = write_config(
        root / "serving.yaml",
        [
            {"name": "plus", "version_policy": "all", "version_labels": {"stable": 1}},
            {"name": "grow", "version_policy": "all", "batching": {"max_batch_size": 8}},
        ],
    )
    keys_file = root / "keys.txt"
    keys_file.write_text(f"# clients of team A\n\n  {KEY_FILE}  \n# retired: none\n")
    settings = Settings(
        model_base_path=repo,
        config=config,
        poll_interval_seconds=0,
        api_keys=SecretStr(f"{KEY_ENV}, {KEY_ENV2}"),
        api_keys_file=keys_file,
        cors_origins=[ORIGIN],
    )
    with running_server(settings) as url:
        yield Server(url, repo)


@pytest.fixture(scope="module")
def locked(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("locked")
    copy_versions(model_library, repo / "plus", "plus", [1])
    settings = Settings(
        model_base_path=repo,
        poll_interval_seconds=0,
        api_keys=SecretStr(KEY_ENV),
        auth_health=True,
        auth_metrics=True,
    )
    with running_server(settings, wait_ready=False) as url:
        wait_ready(url, keyed_headers())
        yield Server(url, repo)


@pytest.fixture(scope="module")
def open_admin(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("open-admin")
    copy_versions(model_library, repo / "plus", "plus", [1])
    settings = Settings(model_base_path=repo, poll_interval_seconds=0, admin_without_keys=True)
    with running_server(settings) as url:
        yield Server(url, repo)


def assert_unauthorized(response: httpx.Response, sent: str | None = None) -> str:
    message = error_message(response, 401)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer "), challenge
    assert ('error="invalid_token"' in challenge) == (sent is not None), challenge
    if sent is not None:
        assert sent not in response.text and sent not in str(response.headers)
    return message


# --- REST: which routes need a key --------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
def test_routes_refuse_a_missing_or_wrong_key(keyed: Server, method: str, path: str) -> None:
    missing = httpx.request(method, keyed.url + path, json=PREDICT_BODY)
    assert "Authorization: Bearer" in assert_unauthorized(missing)
    for headers in ({"X-API-Key": WRONG}, {"Authorization": f"Bearer {WRONG}"}):
        wrong = httpx.request(method, keyed.url + path, json=PREDICT_BODY, headers=headers)
        assert "not valid" in assert_unauthorized(wrong, sent=WRONG)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY_ENV}"},
        {"Authorization": f"bearer {KEY_ENV2}"},  # the scheme in any case, any listed key
        {"X-API-Key": KEY_FILE},  # the key from the file
        {"X-API-Key": KEY_ENV, "Authorization": "Basic dXNlcjpwdw=="},  # a proxy's Basic auth
    ],
    ids=["bearer", "bearer-lowercase-second-key", "x-api-key-from-file", "beside-basic-auth"],
)
def test_a_valid_key_opens_every_protocol(keyed: Server, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=keyed.url, headers=headers, timeout=30) as client:
        status = client.get("/v1/models/plus")
        assert status.status_code == 200, status.text
        predicted = client.post("/v1/models/plus/labels/stable:predict", json=PREDICT_BODY)
        assert predicted.json() == {"predictions": [2.5, 3.0]}, predicted.text
        assert client.get("/v2/models/plus/ready").status_code == 200
        assert client.get("/api/v1/models").status_code == 200
        # past the key check, an unknown route is an ordinary 404
        assert client.get("/no/such/route").status_code == 404


def test_a_key_prefix_or_extension_is_not_a_key(keyed: Server) -> None:
    for almost in (KEY_ENV[:-1], KEY_ENV + "0", KEY_ENV.upper(), f"{KEY_ENV},{KEY_ENV2}"):
        response = httpx.get(f"{keyed.url}/v1/models/plus", headers={"X-API-Key": almost})
        assert_unauthorized(response, sent=almost)


@pytest.mark.parametrize("path", PAGE_ROUTES + HEALTH_ROUTES + ["/metrics"])
def test_page_docs_health_and_metrics_are_public_by_default(keyed: Server, path: str) -> None:
    response = httpx.get(keyed.url + path)
    assert response.status_code == 200, (path, response.status_code, response.text[:200])


def test_health_and_metrics_can_require_a_key(locked: Server) -> None:
    for path in [*HEALTH_ROUTES, "/metrics"]:
        assert_unauthorized(httpx.get(locked.url + path))
        assert httpx.get(locked.url + path, headers=keyed_headers()).status_code == 200
    for path in PAGE_ROUTES:  # the page, its files and the docs hold no data: still public
        assert httpx.get(locked.url + path).status_code == 200, path


def test_refusals_are_counted_and_logged_without_keys(
    keyed: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx.get(f"{keyed.url}/v1/models/plus", headers={"X-API-Key": WRONG})
    httpx.get(f"{keyed.url}/v1/models/plus", headers={"Authorization": f"Bearer {KEY_ENV}"})
    metrics = httpx.get(f"{keyed.url}/metrics").text
    assert 'code="401"' in metrics
    logged = caplog.text + "".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "/v1/models/plus" in logged  # the access log saw both requests...
    for key in (WRONG, KEY_ENV, KEY_ENV2, KEY_FILE):
        assert key not in logged  # ...and no key


def test_settings_never_show_the_keys(tmp_path: Path) -> None:
    settings = Settings(model_base_path=tmp_path, api_keys=SecretStr(KEY_ENV))
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY_ENV not in shown


# --- admin routes ---------------------------------------------------------------------------


def test_admin_routes_are_refused_without_keys(protocol_server: str) -> None:
    admin_routes = [(method, path) for method, path in KEYED_ROUTES if path.startswith("/admin")]
    assert len(admin_routes) == 4
    for method, path in admin_routes:
        response = httpx.request(method, protocol_server + path)
        message = error_message(response, 403)
        assert "MODELSERVE_API_KEYS" in message and "MODELSERVE_ADMIN_WITHOUT_KEYS" in message


def test_admin_config_shows_the_effective_config_without_paths(keyed: Server) -> None:
    response = httpx.get(f"{keyed.url}/admin/config", headers=keyed_headers(KEY_FILE))
    assert response.status_code == 200, response.text
    models = {model["name"]: model for model in response.json()["models"]}
    assert set(models) == {"plus", "grow"}
    assert models["plus"]["version_policy"] == "all"
    assert models["plus"]["version_labels"] == {"stable": 1}
    assert models["grow"]["batching"]["max_batch_size"] == 8
    assert models["grow"]["placement"] == {"device": "auto", "instances": 1}
    assert "base_path" not in models["plus"]
    assert str(keyed.repo) not in response.text and str(keyed.repo.parent) not in response.text


def test_admin_reload_finds_a_new_version_at_once(keyed: Server) -> None:
    shutil.copytree(keyed.repo / "grow" / "1", keyed.repo / "grow" / "2")
    with httpx.Client(base_url=keyed.url, headers=keyed_headers(), timeout=30) as client:
        # polling is off (poll_interval_seconds=0): only the reload can find version 2
        response = client.post("/admin/reload")
        assert response.status_code == 200, response.text
        found = {model["name"]: model for model in response.json()["models"]}
        assert found["grow"]["versions_found"] == [1, 2]
        assert [v["version"] for v in found["grow"]["versions"]] == [1, 2]
        assert found["plus"]["versions_found"] == [1, 2]

        def grow_2_available() -> bool:
            versions = client.get("/v1/models/grow/versions/2").json()["model_version_status"]
            return versions[0]["state"] == "AVAILABLE"

        wait_for(grow_2_available, timeout=60, what="grow version 2 AVAILABLE")


def test_admin_routes_open_without_keys_when_allowed(open_admin: Server) -> None:
    assert httpx.get(f"{open_admin.url}/admin/config").status_code == 200
    response = httpx.post(f"{open_admin.url}/admin/reload")
    assert response.status_code == 200, response.text
    assert response.json()["models"][0]["versions_found"] == [1]


def test_admin_unload_frees_a_model_until_loaded_and_keeps_the_replica_ready(
    open_admin: Server,
) -> None:
    with httpx.Client(base_url=open_admin.url, timeout=30) as client:
        unloaded = client.post("/admin/models/plus/unload")
        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json()["unloaded_by_admin"] is True

        def state() -> str:
            status = client.get("/v1/models/plus").json()["model_version_status"]
            return str(status[0]["state"])

        wait_for(lambda: state() == "END", timeout=30, what="plus version 1 END")
        message = error_message(client.post("/v1/models/plus:predict", json=PREDICT_BODY), 503)
        assert "unloaded by an admin" in message and "/admin/models/plus/load" in message
        # a deliberate unload keeps the replica in rotation; the model itself is not ready
        assert client.get("/readyz").status_code == 200
        assert client.get("/v2/models/plus/ready").status_code != 200
        # a rescan does not bring it back
        assert client.post("/admin/reload").json()["models"][0]["versions"][0]["state"] == "END"
        assert state() == "END"

        loaded = client.post("/admin/models/plus/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["unloaded_by_admin"] is False
        wait_for(lambda: state() == "AVAILABLE", timeout=60, what="plus version 1 AVAILABLE")
        predicted = client.post("/v1/models/plus:predict", json=PREDICT_BODY)
        assert predicted.status_code == 200, predicted.text
        error_message(client.post("/admin/models/nothing/unload"), 404)


# --- CORS -----------------------------------------------------------------------------------


def test_cors_preflight_needs_no_key_and_allows_the_key_headers(keyed: Server) -> None:
    preflight = httpx.options(
        f"{keyed.url}/v1/models/plus:predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, content-type",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "x-api-key" in allowed and "authorization" in allowed
    # the answers carry CORS headers, the 401 too, so a page can read why it was refused
    for headers in ({"Origin": ORIGIN}, {"Origin": ORIGIN, **keyed_headers()}):
        response = httpx.get(f"{keyed.url}/v1/models/plus", headers=headers)
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


def test_cors_refuses_other_origins_and_is_off_by_default(
    keyed: Server, protocol_server: str
) -> None:
    other = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    refused = httpx.options(f"{keyed.url}/v1/models/plus:predict", headers=other)
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    response = httpx.get(f"{protocol_server}/v1/models/plus", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVE_CORS_ORIGINS", f"{ORIGIN}, http://localhost:3000")
    assert Settings().cors_origins == [ORIGIN, "http://localhost:3000"]
    monkeypatch.setenv("MODELSERVE_CORS_ORIGINS", f"{ORIGIN}/app")
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings()


# --- gRPC -----------------------------------------------------------------------------------


def grpc_refusal(call: Any) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    return error.code(), error.details() or ""


def test_grpc_calls_need_a_key_in_their_metadata(keyed: Server) -> None:
    with grpc.insecure_channel(keyed.target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "plus"
        for metadata in ((), (("x-api-key", WRONG),), (("authorization", f"Bearer {WRONG}"),)):
            code, details = grpc_refusal(
                lambda m=metadata: prediction.Predict(
                    plus_request([1.0, 2.0]), metadata=m, timeout=10
                )
            )
            assert code == Code.UNAUTHENTICATED, (code, details)
            assert "API key" in details and WRONG not in details
            code, _ = grpc_refusal(
                lambda m=metadata: models.GetModelStatus(status, metadata=m, timeout=10)
            )
            assert code == Code.UNAUTHENTICATED
        for metadata in ((("authorization", f"Bearer {KEY_ENV}"),), (("x-api-key", KEY_FILE),)):
            answer = prediction.Predict(plus_request([1.0, 2.0]), metadata=metadata, timeout=10)
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [3.5, 4.0]  # version 2
            assert models.GetModelStatus(status, metadata=metadata, timeout=10).model_version_status


def test_v2_grpc_calls_need_a_key_too(keyed: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="plus")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    with grpc.insecure_channel(keyed.target) as channel:
        inference = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for metadata in ((), (("x-api-key", WRONG),)):
            code, _ = grpc_refusal(lambda m=metadata: inference.ModelInfer(request, metadata=m))
            assert code == Code.UNAUTHENTICATED
        answer = inference.ModelInfer(request, metadata=(("x-api-key", KEY_FILE),), timeout=10)
        assert list(answer.outputs[0].contents.fp32_contents) == [3.5]  # version 2: x + 2.5


def reflected_services(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
    return {service.name for service in answer.list_services_response.service}


def test_grpc_health_and_reflection_are_public_by_default(keyed: Server) -> None:
    with grpc.insecure_channel(keyed.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert check.status == Health.SERVING
        assert "tensorflow.serving.PredictionService" in reflected_services(channel, ())


def test_grpc_health_can_require_a_key_streams_too(locked: Server) -> None:
    key = (("x-api-key", KEY_ENV),)
    with grpc.insecure_channel(locked.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="plus")
        code, _ = grpc_refusal(lambda: health.Check(request, timeout=10))
        assert code == Code.UNAUTHENTICATED
        code, _ = grpc_refusal(lambda: next(health.Watch(request, timeout=10)))
        assert code == Code.UNAUTHENTICATED
        assert health.Check(request, metadata=key, timeout=10).status == Health.SERVING
        watch = health.Watch(request, metadata=key, timeout=10)
        assert next(watch).status == Health.SERVING
        watch.cancel()
        # reflection describes the protos only: public even here
        assert "grpc.health.v1.Health" in reflected_services(channel, ())


# --- keys: loading and checking -------------------------------------------------------------


def test_keys_from_the_setting_and_the_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# a comment\n\n{KEY_FILE}\n   \n#{WRONG}\n")
    keys = load_api_keys(SecretStr(f" {KEY_ENV} ,{KEY_ENV2},"), keys_file)
    assert keys is not None and len(keys) == 3
    assert all(keys.accepts(k) for k in (KEY_ENV, KEY_ENV2, KEY_FILE))
    assert not any(keys.accepts(k) for k in (WRONG, "", None, f"{KEY_ENV} ", KEY_ENV[1:]))
    assert load_api_keys(None, None) is None  # keys off


@pytest.mark.parametrize(
    ("api_keys", "file_text", "expected"),
    [
        ("short-key", None, f"{MIN_KEY_LENGTH} characters at least"),
        (" , ,", None, "lists no key"),
        ("", None, "lists no key"),
        (None, "# only comments\n\n", "holds no key"),
        (None, f"{KEY_ENV}\nkey with spaces {WRONG}\n", "line 2: a key must be visible ASCII"),
        (None, f"{WRONG}é{WRONG}\n", "line 1: a key must be visible ASCII"),
    ],
)
def test_unusable_keys_are_refused_without_showing_them(
    tmp_path: Path, api_keys: str | None, file_text: str | None, expected: str
) -> None:
    keys_file = None
    if file_text is not None:
        keys_file = tmp_path / "keys"
        keys_file.write_text(file_text, encoding="utf-8")
    with pytest.raises(ApiKeyError) as raised:
        load_api_keys(None if api_keys is None else SecretStr(api_keys), keys_file)
    message = str(raised.value)
    assert expected in message
    for secret in (WRONG, KEY_ENV, "short-key"):
        assert secret not in message


def test_presented_key_reads_bearer_then_x_api_key() -> None:
    assert presented_key(f"Bearer {KEY_ENV}", KEY_FILE) == KEY_ENV
    assert presented_key("Basic dXNlcjpwdw==", KEY_FILE) == KEY_FILE
    assert presented_key("Bearer ", None) is None
    assert presented_key(None, "  ") is None
    assert not ApiKeys([KEY_ENV]).accepts(None)


def test_serve_refuses_unusable_keys_before_loading_models(tmp_path: Path) -> None:
    result = run("serve", "--model-base-path", str(tmp_path), env={"MODELSERVE_API_KEYS": "tiny"})
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "characters at least" in output and "tiny" not in output
    missing = run("serve", "--api-keys-file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "api_keys_file" in missing.stdout + missing.stderr
