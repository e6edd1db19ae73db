"""Process-wide settings (docs/serving.md): `MODELSERVE_*` variables; those in
`service.cli.SERVE_OPTIONS` are also `serve` flags, with the field's docstring as their --help."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.cpu_limit import available_cpus
from service.logs import LogFormat, LogLevel
from service.tls import check_ca_file, check_key_pair, check_readable_file


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_",
        protected_namespaces=(),
        extra="ignore",
        use_attribute_docstrings=True,
    )

    host: str = "0.0.0.0"
    """Interface to listen on (0.0.0.0: every interface, as a container needs)."""
    port: int = Field(8501, ge=0, le=65535)
    """REST port (TF Serving's default 8501; 0 picks a free port)."""
    grpc_port: int = Field(8500, ge=0, le=65535)
    """gRPC port (TF Serving's default 8500; 0 picks a free port): TF Serving's
    PredictionService and ModelService, grpc.health.v1 and server reflection."""
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message, either direction (a float ResNet50 batch of 32 is ~19 MB)."""
    model_base_path: Path = Path("models")
    """Model repository: <path>/<name>/<version>/. Without a config file every model in it is
    served with the newest version."""
    config: Path | None = None
    """Serving config file (YAML or TOML): models, version policies, labels, batching."""
    model_config_file: Path | None = None
    """TF Serving's own model_config_list text file, as an alternative to `config`."""
    log_level: LogLevel = "info"
    """Log level of the server and its access log."""
    log_format: LogFormat = "json"
    """`json`: one JSON object per line (access log: method, route, model, version, status,
    latency, batch size, client pause, request id), for log collectors; `text`: for a terminal."""
    poll_interval_seconds: float = Field(2.0, ge=0)
    """How often the repository is scanned for new and removed versions (0: only at start)."""
    load_threads: int = Field(2, ge=1)
    """Threads loading and warming up model versions."""
    inference_threads: int = Field(default_factory=lambda: max(2, available_cpus()), ge=1)
    """Threads running model calls. Default: the CPUs available, at least 2."""
    intra_op_threads: int = Field(default_factory=available_cpus, ge=1)
    """TensorFlow threads within one op. Default: the CPUs available (the container's limit)."""
    inter_op_threads: int = Field(default_factory=lambda: min(2, available_cpus()), ge=1)
    """TensorFlow threads running independent ops of one call in parallel."""
    drain_seconds: int = Field(25, ge=0, le=3600)
    """On SIGTERM: how long admitted requests may take to finish before the rest get 503 and
    the process exits (keep terminationGracePeriodSeconds above preStop + this)."""
    virtual_devices: int = Field(0, ge=0, le=64)
    """Split the CPU into this many logical devices (0/1: one), to exercise placement."""
    gpu_memory_limit_mb: int | None = Field(None, ge=64)
    """Cap on the memory TensorFlow takes per GPU (default: grow as needed)."""
    auto_gpu_min_mb: float = Field(20.0, ge=0)
    """`device: auto` puts models whose variables are at least this large on GPUs."""
    echo: bool = False
    """Benchmark only: answer zeros shaped like the outputs without running the model."""
    workers: int | None = Field(None, ge=0, le=64)
    """Front-end worker processes (HTTP and gRPC on the same ports) around one model process
    that runs TensorFlow and batches every worker's requests together; 0: one process does
    everything. Default: one per CPU of the container's limit (0 with a single CPU)."""
    arena_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    """Shared memory per worker and direction for the tensors between a worker and the model
    process (sparse: only what is used is resident); a tensor finding no room is copied."""
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond); a 224x224x3 float batch of 32 is ~30 MB."""

    # -- HTTP connection limits (service.http.limits), enforced before a request reaches the app
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest request line plus headers (431 beyond), counted as they arrive."""
    max_header_count: int = Field(100, ge=8, le=10_000)
    """Most headers in one request (431 beyond)."""
    header_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    """Time to send a request's complete headers, from opening or the previous response (408)."""
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    """Longest pause between two reads of a body; then closed and counted client_gone (499)."""
    max_connections: int = Field(1000, ge=1, le=1_000_000)
    """Open HTTP connections served at once (503 with Retry-After beyond, then closed)."""
    grpc_max_concurrent_rpcs: int = Field(1000, ge=1, le=1_000_000)
    """gRPC calls handled at once (RESOURCE_EXHAUSTED beyond)."""
    follow_version_symlinks: bool = False
    """Serve a version folder that is a symbolic link (it may point anywhere)."""
    decode_threads: int = Field(2, ge=1)
    """Threads decoding large bodies and encoding large answers, off the event loop."""
    decode_memory_bytes: int = Field(1024 * 1024 * 1024, ge=1024 * 1024)
    """Memory bodies being decoded may take at once, estimated at 32 times their size; beyond
    it requests wait, and once as much again waits they are refused (429)."""
    decode_inline_bytes: int = Field(64 * 1024, ge=0)
    """Bodies and answers up to this size are decoded on the event loop (cheaper than a hop)."""

    # -- task API limits (/api/v1/...), all checked before any decoding or model work
    max_upload_files: int = Field(16, ge=1)
    """Files per upload request (413 beyond)."""
    max_items: int = Field(256, ge=1)
    """Items (texts, vote records, 28x28 arrays) per JSON request (413 beyond)."""
    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest image, read from its header before decoding (413 beyond; decompression bombs)."""
    image_decode_threads: int = Field(default_factory=available_cpus, ge=1)
    """Images decoded at once. Default: the CPUs available."""
    max_decode_pixels: int | None = Field(None, ge=1)
    """Pixels decoded at once over all requests (~12 bytes each); an image waits until its
    pixels fit, at most until its deadline (504). Default: 4 * max_image_pixels."""
    max_text_chars: int = Field(50_000, ge=1)
    """Longest review accepted by /api/v1/sentiment, in characters (413 beyond)."""
    allow_random_weights: bool = False
    """Let /api/v1/images answer from a `resnet50` with random weights (`modelserve train
    resnet50 --weights none`), whose labels are meaningless (else 409). For load tests only."""
    auto_export: bool = True
    """At start, export in the background each served model that is missing and needs no
    training (today `resnet50`: Keras' ImageNet weights, a 98 MB download kept in Keras' cache),
    while the other models serve. Off for air-gapped installs and images that ship their models
    (the Dockerfile's). Models that need training are never trained implicitly."""
    resnet50_weights: str | None = None
    """Where the automatic export of `resnet50` gets Keras' weights file
    (resnet50_weights_tf_dim_ordering_tf_kernels.h5): a local copy, or an http(s) or file URL
    of a mirror (md5 checked). Default: Keras' cache, else Keras' download."""

    # -- access control and transport security
    api_keys: SecretStr | None = None
    """API keys, comma-separated (never logged). With keys, REST and gRPC calls need
    `Authorization: Bearer <key>` or `X-API-Key: <key>` (401 / UNAUTHENTICATED), except the web
    page, the API docs, health and metrics (see `auth_health`, `auth_metrics`)."""
    api_keys_file: Path | None = None
    """File of API keys, one a line, blank lines and `#` comments ignored (e.g. a mounted
    Kubernetes Secret), read at start-up; taken together with MODELSERVE_API_KEYS."""
    auth_health: bool = False
    """Require a key for health endpoints too (default: public, for probes)."""
    auth_metrics: bool = False
    """Require a key for /metrics (default: public, for Prometheus)."""
    admin_without_keys: bool = False
    """Serve /admin/... without API keys (trusted networks); by default they answer 403."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain) of the server: REST is served over HTTPS and gRPC over TLS.
    Needs `tls_key_file`; default: plain HTTP and gRPC (TLS terminated in front, or none)."""
    tls_key_file: Path | None = Field(None, validate_default=True)
    """PEM private key of `tls_cert_file`."""
    tls_ca_file: Path | None = Field(None, validate_default=True)
    """PEM CA certificates: REST and gRPC clients must present a certificate signed by one
    (mutual TLS). Needs `tls_cert_file`; default: no client certificates asked."""
    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed to call the API from browser pages, comma-separated (`*`: any)."""

    @field_validator("api_keys_file", "tls_cert_file")
    @classmethod
    def _readable_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else check_readable_file(path, str(info.field_name))

    @field_validator("tls_key_file")
    @classmethod
    def _key_with_certificate(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert_file" not in info.data:  # the certificate is already reported
            return key
        cert = info.data["tls_cert_file"]
        if (cert is None) != (key is None):
            missing = "tls_key_file" if key is None else "tls_cert_file"
            raise ValueError(f"tls_cert_file and tls_key_file go together: {missing} is missing")
        if cert is not None and key is not None:
            check_key_pair(cert, check_readable_file(key, "tls_key_file"))
        return key

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_with_certificate(cls, ca: Path | None, info: ValidationInfo) -> Path | None:
        if ca is None:
            return None
        if info.data.get("tls_cert_file") is None:
            raise ValueError(
                "tls_ca_file (client certificates) needs tls_cert_file and tls_key_file"
            )
        check_ca_file(check_readable_file(ca, "tls_ca_file"))
        return ca

    @field_validator("max_decode_pixels")
    @classmethod
    def _holds_the_largest_image(cls, budget: int | None, info: ValidationInfo) -> int | None:
        largest = info.data.get("max_image_pixels")
        if budget is not None and largest is not None and budget < largest:
            raise ValueError(
                f"must be at least max_image_pixels ({largest:,}): an image of that size could "
                "never be decoded"
            )
        return budget

    def front_end_workers(self) -> int:
        """Worker processes to start (0: one process does everything)."""
        if self.workers is not None:
            return self.workers
        cpus = available_cpus()
        return cpus if cpus >= 2 else 0

    @property
    def decode_pixel_budget(self) -> int:
        """max_decode_pixels, or its default: 4 times max_image_pixels."""
        return self.max_decode_pixels or 4 * self.max_image_pixels

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, origins: object) -> object:
        if isinstance(origins, str):
            return [o.strip() for o in origins.split(",") if o.strip()]
        return origins

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path (or *)"
                )
        return origins
