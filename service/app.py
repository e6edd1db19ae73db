"""The FastAPI application: `create_app(settings)` wires settings, the serving config, the
model repository and the protocol routers together. No module-level state, so tests can build
as many apps as they like."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope

from service import __version__
from service.auth import AccessControl, AccessPolicy
from service.decoding import Decoder
from service.errors import QueueFullError, ServingError
from service.grpc_server import GrpcSecurity, start_grpc_server
from service.lifecycle import DrainGate, Lifecycle
from service.metrics import Metrics
from service.middleware import RequestObserver
from service.placement import DeviceSetup, configure_devices
from service.protocols import (
    admin,
    docs,
    health,
    overview,
    prometheus,
    tfserving_rest,
    v2_rest,
    web,
)
from service.protocols.json_io import JSONBody
from service.protocols.message_split import MessageSplitter
from service.repository import ModelRepository
from service.security_headers import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, SecurityHeaders
from service.serving_config import (
    ServingConfig,
    discover_serving_config,
    load_serving_config,
    load_tfserving_model_config,
)
from service.settings import Settings
from service.tasks import routes as task_routes
from service.tasks.image_decoding import ImageDecoder

log = logging.getLogger(__name__)


def serving_config_for(settings: Settings) -> ServingConfig:
    """The serving config file when one is given, else every model under the base path."""
    if settings.config is not None:
        return load_serving_config(settings.config, settings.model_base_path)
    if settings.model_config_file is not None:
        return load_tfserving_model_config(settings.model_config_file)
    return discover_serving_config(settings.model_base_path)


def create_app(
    settings: Settings,
    serving_config: ServingConfig | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The app; `metrics` (its registry) may be given, else each app gets its own."""
    config = serving_config or serving_config_for(settings)
    metrics = metrics or Metrics()
    access = AccessPolicy.from_settings(settings)  # reads the keys file: REST and gRPC share it

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device_setup = DeviceSetup(
            virtual_cpus=settings.virtual_devices,
            gpu_memory_limit_mb=settings.gpu_memory_limit_mb,
            auto_gpu_min_mb=settings.auto_gpu_min_mb,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )
        devices = configure_devices(device_setup)
        if settings.echo:
            log.warning("ECHO MODE: models are not run; answers are zeros (benchmarks only)")
        inference = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
        repository = ModelRepository(
            config,
            poll_interval=settings.poll_interval_seconds,
            inference_executor=inference,
            load_threads=settings.load_threads,
            devices=devices,
            device_setup=device_setup,
            echo=settings.echo,
            batch_observer=metrics.batch_observer,
            grpc_max_message_bytes=settings.grpc_max_message_bytes,
            follow_symlinks=settings.follow_version_symlinks,
        )
        metrics.watch(repository)
        app.state.repository = repository
        decoder = ImageDecoder(settings.image_decode_threads, settings.decode_pixel_budget)
        metrics.watch_image_decoder(decoder)
        app.state.image_decoder = decoder
        await repository.start()
        # SIGTERM (see cli.serve) begins the gRPC drain while uvicorn drains REST: both fit
        # in one drain time
        body_decoder = Decoder(
            settings.decode_threads, settings.decode_memory_bytes, settings.decode_inline_bytes
        )
        app.state.body_decoder = body_decoder
        splitter = MessageSplitter()
        grpc_drain, app.state.grpc_port = await start_grpc_server(
            repository,
            metrics,
            body_decoder,
            splitter,
            host=settings.host,
            port=settings.grpc_port,
            max_message_bytes=settings.grpc_max_message_bytes,
            drain_seconds=settings.drain_seconds,
            security=GrpcSecurity.from_settings(settings, access.keys),
            max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        app.state.begin_drain = grpc_drain.begin
        log.info("serving %s from %s", ", ".join(repository.model_names()), config.source)
        try:
            yield
        finally:
            await grpc_drain.finish()
            await repository.stop()
            inference.shutdown(wait=True, cancel_futures=True)
            body_decoder.close()
            splitter.close()
            decoder.close()

    app = FastAPI(
        title="modelserve",
        version=__version__,
        summary="TensorFlow model serving: TF Serving REST, Open Inference Protocol (V2), task API",
        lifespan=lifespan,
        default_response_class=JSONBody,
        docs_url=None,  # service.protocols.docs serves them, from files in the package
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.lifecycle = Lifecycle()
    # the last added runs first: the observer sees (and counts) the drain gate's 503s
    # ... and the access check's 401s; CORS answers preflights (which carry no key) and
    # sets its headers on every answer, as the security headers do
    app.add_middleware(DrainGate, lifecycle=app.state.lifecycle)
    app.add_middleware(AccessControl, policy=access)
    app.add_middleware(RequestObserver, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
        )
    app.add_middleware(SecurityHeaders)
    # with keys, /docs shows an "Authorize" button (the middleware does the checking)
    keyed = [Security(APIKeyHeader(name="X-API-Key", auto_error=False))] if access.keys else []
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(tfserving_rest.router, dependencies=keyed)
    app.include_router(v2_rest.router, dependencies=keyed)
    app.include_router(overview.router, dependencies=keyed)
    app.include_router(task_routes.router, dependencies=keyed)
    app.include_router(admin.router, dependencies=keyed)
    app.include_router(web.router)
    app.include_router(docs.router)
    app.mount("/static", web.static_files(), name="static")
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error body is {"error": "..."}, as TF Serving and V2 both specify."""

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> Response:
        if exc.http_status in (503, 504):  # overload or a client's deadline: expected
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        elif exc.http_status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        headers = {}
        if isinstance(exc, QueueFullError):
            headers["Retry-After"] = str(exc.retry_after_seconds)
        return JSONBody({"error": exc.message}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONBody({"error": f"invalid request: {problems}"}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return _method_not_allowed(request, exc)
        return JSONBody(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONBody({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


# the methods a 405 may list: the API routes take GET or POST; /openapi.json and the docs'
# script take HEAD too
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    """405 with `Allow` naming every method of every route at this path: the router names only
    the first route's, and a TF Serving path such as /v1/models/votes:bar has two (GET: model
    status, POST: call)."""
    allowed = _allowed_methods(request.app, request.scope)
    if not allowed:  # not the router's 405 (static files'): keep what it said
        allowed = (exc.headers or {}).get("Allow", "").split(", ")
    listed = ", ".join(allowed)
    return JSONBody(
        {"error": f"method {request.method} is not allowed here; allowed: {listed}"},
        status_code=405,
        headers={**(exc.headers or {}), "Allow": listed},
    )


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route (not a mount: they take any method) answers at the request's
    path, found by matching a fresh scope per method (no state of this request is touched)."""
    allowed = []
    for method in _METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": [],
        }
        routes = (route for route in app.router.routes if not isinstance(route, Mount))
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed
