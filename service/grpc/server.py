"""The gRPC server (TF Serving's services, the Open Inference Protocol's, health and reflection) on
`grpc.aio`, in the REST server's event loop. API keys: service.grpc.auth; with `tls_cert_file` it
speaks TLS only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.auth import ApiKeys
from service.core.decoding import Decoder
from service.core.inference import InferenceCore, Repository
from service.grpc.auth import ApiKeyInterceptor
from service.grpc.limits import ConcurrencyLimit, core_queue_options
from service.grpc.message_split import MessageSplitter
from service.grpc.services import MODEL_SERVICE, PREDICTION_SERVICE, add_services
from service.grpc.v2_services import (
    INFERENCE_SERVICE,
    InferenceServicer,
    add_inference_service,
)
from service.metrics import Metrics
from service.tls import grpc_server_credentials

if TYPE_CHECKING:  # the repository imports TensorFlow: front-end workers must not
    from service.settings import Settings

log = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
WATCH_INTERVAL_SECONDS = 1.0
Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, repository: Repository) -> None:
        self._repository = repository
        self.draining = asyncio.Event()  # set on shutdown: every status is NOT_SERVING

    def status(self, service: str) -> int | None:
        """The server ("", or TF Serving's services) is SERVING when every model is ready, a
        model name when that model is; None for a service name nobody serves."""
        readiness = self._repository.readiness()
        if service in ("", PREDICTION_SERVICE, MODEL_SERVICE, INFERENCE_SERVICE):
            ready = self._repository.is_ready()
        elif service in readiness:
            ready = readiness[service]
        else:
            return None
        serving = ready and not self.draining.is_set()
        status: int = Status.SERVING if serving else Status.NOT_SERVING
        return status

    async def Check(  # noqa: N802 (the proto's method names)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: int | None = -1
        while True:  # until the client cancels, or the server drains
            status = self.status(request.service)
            if status != last:
                shown = Status.SERVICE_UNKNOWN if status is None else status
                yield health_pb2.HealthCheckResponse(status=shown)
                last = status
            if self.draining.is_set():
                return  # NOT_SERVING was the last word; an open stream would hold the drain
            with contextlib.suppress(TimeoutError):  # a poll interval, or the drain
                await asyncio.wait_for(self.draining.wait(), WATCH_INTERVAL_SECONDS)


@dataclass(frozen=True)
class GrpcSecurity:
    """API keys (None: none), the services open without a key, TLS (None: plaintext)."""

    keys: ApiKeys | None = None
    public_services: frozenset[str] = frozenset({HEALTH_SERVICE, reflection.SERVICE_NAME})
    credentials: grpc.ServerCredentials | None = None

    @classmethod
    def from_settings(cls, settings: Settings, keys: ApiKeys | None) -> GrpcSecurity:
        health = () if settings.auth_health else (HEALTH_SERVICE,)
        return cls(
            keys=keys,
            public_services=frozenset((reflection.SERVICE_NAME, *health)),
            credentials=grpc_server_credentials(settings),
        )


async def start_grpc_server(
    core: InferenceCore,
    metrics: Metrics,
    decoder: Decoder,
    splitter: MessageSplitter,
    *,
    host: str,
    port: int,
    max_message_bytes: int,
    drain_seconds: float,
    security: GrpcSecurity | None = None,
    max_concurrent_rpcs: int = 1000,
) -> tuple[GrpcDrain, int]:
    """Starts serving; returns its drain and the port it listens on (`port` 0: a free one)."""
    security = security or GrpcSecurity()
    keys = security.keys
    limit = ConcurrencyLimit(
        max_concurrent_rpcs, lambda: metrics.grpc_refused.labels("concurrency").inc()
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [limit]  # first: a refusal costs nothing
    if keys:
        interceptors.append(ApiKeyInterceptor(keys, security.public_services))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *core_queue_options(max_concurrent_rpcs),
        ],
    )
    add_services(server, core, metrics, decoder, splitter, max_message_bytes)
    add_inference_service(
        server, InferenceServicer(core, metrics, decoder, splitter, max_message_bytes)
    )
    health = HealthServicer(core.repository)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            PREDICTION_SERVICE,
            MODEL_SERVICE,
            INFERENCE_SERVICE,
            HEALTH_SERVICE,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"[::]:{port}" if host in ("0.0.0.0", "::") else f"{host}:{port}"
    if security.credentials is not None:
        bound = server.add_secure_port(address, security.credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"gRPC cannot listen on {address}")
    await server.start()
    log.info(
        "gRPC (TF Serving PredictionService, ModelService, V2 GRPCInferenceService, health) "
        "on %s (%s%s)",
        bound,
        "TLS" if security.credentials is not None else "plaintext",
        f", {len(keys)} API keys" if keys else "",
    )
    return GrpcDrain(server, health, drain_seconds), bound


class GrpcDrain:
    """Stops the server once: health turns NOT_SERVING (Watch streams end), new calls are
    refused, calls in flight get `grace` seconds. `begin` is safe from a signal handler."""

    def __init__(self, server: grpc.aio.Server, health: HealthServicer, grace: float) -> None:
        self._server = server
        self._health = health
        self._grace = grace
        self._loop = asyncio.get_running_loop()
        self._stopping: asyncio.Future[None] | None = None

    def begin(self) -> None:
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._stopping is None:
            self._health.draining.set()
            self._stopping = asyncio.ensure_future(self._server.stop(self._grace))

    async def finish(self) -> None:
        self._start()
        assert self._stopping is not None
        await self._stopping
