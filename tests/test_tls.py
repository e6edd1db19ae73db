"""TLS: `modelserve serve` as a real process with certificates made by `trustme` (a test CA),
REST over HTTPS with httpx and gRPC over secure channels; mutual TLS; and the start-up errors
for TLS files that are missing, unpaired or unreadable."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tensorflow as tf
import trustme
from pydantic import ValidationError
from tensorflow_serving.apis import prediction_service_pb2_grpc

from service.settings import Settings
from tests.saved_models import export_affine
from tests.server import free_port
from tests.test_cli import run
from tests.test_cli_serve import serve_process, wait_ready
from tests.test_grpc import plus_request

KEY = secrets.token_hex(16)


@dataclass
class Pki:
    """A test CA and what it signed: the server's certificate for 127.0.0.1, a client's."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_key: Path  # a valid key that belongs to another certificate


@dataclass
class TlsServer:
    rest: str  # https://127.0.0.1:<port>
    grpc: str  # 127.0.0.1:<port>
    pki: Pki


def write_leaf(leaf: trustme.LeafCert, cert: Path, key: Path) -> None:
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    write_leaf(ca.issue_cert("127.0.0.1", "localhost"), folder / "cert.pem", folder / "key.pem")
    write_leaf(ca.issue_cert("client.example"), folder / "client.pem", folder / "client-key.pem")
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(folder / "other.pem"))
    return Pki(
        folder / "ca.pem",
        folder / "cert.pem",
        folder / "key.pem",
        folder / "client.pem",
        folder / "client-key.pem",
        folder / "other.pem",
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tls-repo")
    export_affine(base, "plus", 1, slope=0.5, offset=2.0)
    return base


def client_context(pki: Pki, *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def start(repo: Path, pki: Pki, *args: str, env: dict[str, str]) -> Iterator[TlsServer]:
    """`modelserve serve` with the server certificate (and `args`), ready."""
    port, grpc_port = free_port(), free_port()
    tls = ("--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key))
    command = ("--host", "127.0.0.1", "--port", str(port), "--model-base-path", str(repo))
    env = {"MODELSERVE_POLL_INTERVAL_SECONDS": "0", "MODELSERVE_LOG_LEVEL": "warning", **env}
    with serve_process(*command, *tls, *args, env=env, grpc_port=grpc_port) as process:
        server = TlsServer(f"https://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", pki)
        context = client_context(pki, client_cert="--tls-ca-file" in args)
        wait_ready(server.rest, process, verify=context)
        yield server


@pytest.fixture(scope="module")
def tls_server(repo: Path, pki: Pki) -> Iterator[TlsServer]:
    """HTTPS and gRPC over TLS, with an API key."""
    yield from start(repo, pki, env={"MODELSERVE_API_KEYS": KEY})


@pytest.fixture(scope="module")
def mtls_server(repo: Path, pki: Pki) -> Iterator[TlsServer]:
    """Mutual TLS: clients need a certificate from the test CA (and no API keys)."""
    yield from start(repo, pki, "--tls-ca-file", str(pki.ca), env={})


def grpc_predict(
    target: str, credentials: grpc.ChannelCredentials | None, metadata: Any = ()
) -> list[float]:
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answer = stub.Predict(plus_request([1.0, 2.0]), metadata=metadata, timeout=10)
    values: list[float] = tf.make_ndarray(answer.outputs["y"]).tolist()
    return values


def grpc_code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    code: grpc.StatusCode = error.code()
    return code


# --- a server with TLS ----------------------------------------------------------------------


def test_rest_is_https_only_with_hsts(tls_server: TlsServer) -> None:
    context = client_context(tls_server.pki)
    with httpx.Client(base_url=tls_server.rest, verify=context, timeout=30) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"].startswith("max-age=")
        assert "server" not in health.headers  # no software banner
        assert client.post("/v1/models/plus:predict", json={"instances": [1.0]}).status_code == 401
        answer = client.post(
            "/v1/models/plus:predict",
            json={"instances": [1.0, 2.0]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert answer.json() == {"predictions": [2.5, 3.0]}, answer.text
    plain = tls_server.rest.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=5)  # no plaintext HTTP on the port
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_server.rest}/healthz", timeout=5)  # the system CAs do not know ours


def test_grpc_is_tls_only(tls_server: TlsServer) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_server.pki.ca.read_bytes())
    key = (("authorization", f"Bearer {KEY}"),)
    assert grpc_predict(tls_server.grpc, credentials, key) == [2.5, 3.0]
    code = grpc_code(lambda: grpc_predict(tls_server.grpc, credentials))
    assert code == grpc.StatusCode.UNAUTHENTICATED  # TLS is no substitute for the key
    assert grpc_code(lambda: grpc_predict(tls_server.grpc, None, key)) == (
        grpc.StatusCode.UNAVAILABLE  # a plaintext channel cannot talk to it
    )


# --- mutual TLS -------------------------------------------------------------------------------


def test_mutual_tls_needs_a_client_certificate_on_rest(mtls_server: TlsServer) -> None:
    pki = mtls_server.pki
    with httpx.Client(verify=client_context(pki, client_cert=True), timeout=30) as client:
        answer = client.post(
            f"{mtls_server.rest}/v1/models/plus:predict", json={"instances": [2.0]}
        )
        assert answer.json() == {"predictions": [3.0]}, answer.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{mtls_server.rest}/healthz", verify=client_context(pki), timeout=5)


def test_mutual_tls_needs_a_client_certificate_on_grpc(mtls_server: TlsServer) -> None:
    pki = mtls_server.pki
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    assert grpc_predict(mtls_server.grpc, with_cert) == [2.5, 3.0]
    without = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    assert grpc_code(lambda: grpc_predict(mtls_server.grpc, without)) == grpc.StatusCode.UNAVAILABLE


# --- start-up errors --------------------------------------------------------------------------


def settings_error(**tls: Path) -> str:
    with pytest.raises(ValidationError) as raised:
        Settings(**tls)
    return str(raised.value)


def test_certificate_and_key_go_together(pki: Pki) -> None:
    assert "tls_key_file is missing" in settings_error(tls_cert_file=pki.cert)
    assert "tls_cert_file is missing" in settings_error(tls_key_file=pki.key)
    message = settings_error(tls_ca_file=pki.ca)
    assert "tls_ca_file (client certificates) needs tls_cert_file" in message
    paired = Settings(tls_cert_file=pki.cert, tls_key_file=pki.key, tls_ca_file=pki.ca)
    assert paired.tls_ca_file == pki.ca


def test_tls_files_must_exist_and_load(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    message = settings_error(tls_cert_file=missing, tls_key_file=pki.key)
    assert f"tls_cert_file: {missing} is not a file" in message
    message = settings_error(tls_cert_file=pki.cert, tls_key_file=tmp_path)
    assert f"tls_key_file: {tmp_path} is not a file" in message
    message = settings_error(tls_cert_file=pki.cert, tls_key_file=pki.other_key)
    assert "do not load as a PEM certificate and its key" in message
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    message = settings_error(tls_cert_file=pki.cert, tls_key_file=pki.key, tls_ca_file=garbage)
    assert "tls_ca_file" in message and "does not load as PEM CA certificates" in message


def test_serve_names_the_missing_tls_setting(pki: Pki, repo: Path) -> None:
    result = run("serve", "--model-base-path", str(repo), "--tls-cert-file", str(pki.cert))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "tls_key_file is missing" in result.stderr
    assert "Traceback" not in result.stderr
