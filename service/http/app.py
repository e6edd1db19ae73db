"""The REST application of a `service.server.ModelServer`: its routers, middleware and error
handlers (every error body is {"error": "..."})."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Scope

from service import __version__
from service.errors import QueueFullError, ServingError
from service.http import admin, docs, health, overview, prometheus, tfserving_rest, v2_rest, web
from service.http.inference_lane import DirectLane, InferenceLane
from service.http.json_io import JSONBody
from service.http.middleware import ErrorHandler, RequestGate
from service.http.security_headers import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS, SecurityHeaders
from service.observer import log_failure
from service.tasks import routes as task_routes

if TYPE_CHECKING:
    from service.server import ModelServer

log = logging.getLogger(__name__)


def asgi_app(server: ModelServer) -> ASGIApp:
    """What uvicorn runs: `server.app`, with the inference routes' requests taken past
    FastAPI's own layers (`DirectLane`) unless CORS puts its layers outside the gate."""
    if server.settings.cors_origins:
        return server.app
    lane = InferenceLane(server.app, routes=_lane_routes(), error_handlers=ERROR_HANDLERS)
    gate = RequestGate(
        lane,
        lifecycle=server.lifecycle,
        policy=server.access,
        metrics=server.metrics,
        unexpected=ERROR_HANDLERS[Exception],
    )
    return DirectLane(server.app, gate, lane)


def _lane_routes() -> list[BaseRoute]:
    return [*tfserving_rest.router.routes, *v2_rest.router.routes]


def create_app(server: ModelServer) -> FastAPI:
    """Its lifespan runs the server's parts (routes reach them via service.http.dependencies)."""
    app = FastAPI(
        title="modelserve",
        version=__version__,
        summary="TensorFlow model serving: TF Serving REST, Open Inference Protocol (V2), task API",
        lifespan=lambda app: server.running(),
        default_response_class=JSONBody,
        docs_url=None,  # service.http.docs serves them, from files in the package
        redoc_url=None,
    )
    app.state.server = server
    # the REST middleware: security headers, then the request's bookkeeping (which counts the
    # access check's 401s and the drain gate's 503s), the access check and the drain gate.
    # CORS, when on, answers preflights (which carry no key) and sets its headers on all: it
    # sits between the security headers (their own layer then, as the last added runs first)
    # and the rest
    cors = bool(server.settings.cors_origins)
    # innermost: the inference routes' direct path (service.http.inference_lane)
    app.add_middleware(InferenceLane, routes=_lane_routes(), error_handlers=ERROR_HANDLERS)
    app.add_middleware(
        RequestGate,
        lifecycle=server.lifecycle,
        policy=server.access,
        metrics=server.metrics,
        security_headers=not cors,
    )
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
        )
        app.add_middleware(SecurityHeaders)
    # with keys, /docs shows an "Authorize" button (the middleware does the checking)
    key = Security(APIKeyHeader(name="X-API-Key", auto_error=False))
    keyed = [key] if server.access.keys else []
    for module in (health, prometheus):
        app.include_router(module.router)
    for module in (tfserving_rest, v2_rest, overview, task_routes, admin):
        app.include_router(module.router, dependencies=keyed)
    for module in (web, docs):
        app.include_router(module.router)
    app.mount("/static", web.static_files(), name="static")
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    for kind, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(kind, handler)
    return app


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    log_failure(f"{request.method} {request.url.path}", exc)
    headers = {}
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return JSONBody({"error": exc.message}, status_code=exc.http_status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONBody({"error": f"invalid request: {problems}"}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _method_not_allowed(request, exc)
    return JSONBody({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONBody({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


# Every error body is {"error": "..."}, as TF Serving and V2 both specify. Exception's handler
# is Starlette's last resort (a 500, outside the middleware); the others answer inside it.
ERROR_HANDLERS: dict[type[Exception], ErrorHandler] = {
    ServingError: _serving_error,
    RequestValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected_error,
}


# the methods a 405 may list: the API routes take GET or POST; /openapi.json and the docs'
# script take HEAD too
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    """405 with `Allow` naming every method of every route at this path: the router names only
    the first route's, and a TF Serving path such as /v1/models/votes:bar has two (GET: model
    status, POST: call). Each method is matched on a fresh scope (mounts take any method)."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = []
    for method in _METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "headers": [],
        }
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    if not allowed:  # not the router's 405 (static files'): keep what it said
        allowed = (exc.headers or {}).get("Allow", "").split(", ")
    listed = ", ".join(allowed)
    return JSONBody(
        {"error": f"method {request.method} is not allowed here; allowed: {listed}"},
        status_code=405,
        headers={**(exc.headers or {}), "Allow": listed},
    )
