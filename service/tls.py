"""TLS for REST (uvicorn's HTTPS options) and gRPC from the same PEM files; mutual TLS when
`tls_ca_file` is set."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from service.settings import Settings


def check_readable_file(path: Path, setting: str) -> Path:
    """`path` if it is a readable file; a ValueError naming the setting and path otherwise."""
    if not path.is_file():
        raise ValueError(f"{setting}: {path} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    return path


def check_key_pair(cert_file: Path, key_file: Path) -> None:
    """Checked at start-up: a wrong file is one clear error, not a failure on a connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"tls_cert_file and tls_key_file do not load as a PEM certificate and its key: "
            f"{exc.strerror or exc}"
        ) from None


def check_ca_file(ca_file: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"tls_ca_file: {ca_file} does not load as PEM CA certificates: {exc.strerror or exc}"
        ) from None


def uvicorn_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments for HTTPS ({} without TLS)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
    }
    if settings.tls_ca_file is not None:
        options |= {"ssl_ca_certs": str(settings.tls_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def grpc_server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gRPC server's TLS credentials (None without TLS)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    import grpc

    ca = settings.tls_ca_file.read_bytes() if settings.tls_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
