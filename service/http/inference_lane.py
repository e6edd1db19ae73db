"""The inference routes without FastAPI's dispatch: POST /v1/models/...:predict (:classify,
:regress) and /v2/models/.../infer are matched here, with their routes' own patterns, and their
endpoints called directly, skipping the router's walk through the nested routers, the
dependency solving and the exception middleware (11 % of a worker's event-loop samples between
the middleware and the endpoint on digits, py-spy under load). Everything else goes through the
app as before.

The endpoints, their errors (the app's own exception handlers) and the request's scope (its
route, for the metrics' labels) are the same either way; the tests of these routes run through
this lane."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http import tfserving_rest, v2_rest
from service.http.middleware import ErrorHandler

if TYPE_CHECKING:
    from service.server import ModelServer

# the endpoints this lane calls: each takes its path parameters, `request` and `core`
LANE_ENDPOINTS = frozenset(
    {
        tfserving_rest.model_method,
        tfserving_rest.version_method,
        tfserving_rest.label_method,
        v2_rest.model_infer,
        v2_rest.version_infer,
    }
)
MATCHED_KEY = "modelserve.lane_route"  # DirectLane's match (or None), not made again


class InferenceLane:
    """ASGI middleware (innermost, inside `RequestGate`): the lane's routes, else `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[BaseRoute],
        error_handlers: dict[type[Exception], ErrorHandler],
    ) -> None:
        self.app = app
        # in the routers' order: the app's router takes the first route that matches too
        self.routes = [
            route
            for route in routes
            if isinstance(route, APIRoute) and route.endpoint in LANE_ENDPOINTS
        ]
        self._error_handlers = error_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope[MATCHED_KEY] if MATCHED_KEY in scope else self.match(scope)
        if route is None:
            await self.app(scope, receive, send)
        else:
            await self._call(route, scope, receive, send)

    def match(self, scope: Scope) -> APIRoute | None:
        """The lane's route for the request, its path parameters put in `scope` as the router
        puts them (route, endpoint, path_params); None for any other request."""
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    return route
        return None

    async def _call(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        server = cast("ModelServer", scope["app"].state.server)
        params: dict[str, Any] = scope["path_params"]
        try:
            response = await route.endpoint(**params, request=request, core=server.parts.core)
        except Exception as error:  # the app's handler for it, or (none) the app's 500
            handler = self._handler(error)
            if handler is None:
                raise
            response = await handler(request, error)
        await response(scope, receive, send)

    def _handler(self, error: Exception) -> ErrorHandler | None:
        for kind in type(error).__mro__:  # the most specific, as Starlette picks
            handler = self._error_handlers.get(kind)
            if handler is not None and kind is not Exception:
                return handler
        return None


class DirectLane:
    """The ASGI app uvicorn runs: a request for one of the lane's routes goes straight to the
    request gate and the lane, past the layers FastAPI and Starlette wrap around the app's
    middleware (FastAPI's body-size and telemetry layers, the exception catch-all; together
    with their coroutine levels 5.6 % of a worker's samples under digits V2 JSON load,
    py-spy). Everything else goes to `app`. Only used when the gate is the outermost middleware
    (no CORS layers): then nothing the app's stack adds is skipped but the catch-all, which
    the gate does itself (built with `unexpected`: the app's handler for Exception)."""

    def __init__(self, app: ASGIApp, gate: ASGIApp, lane: InferenceLane):
        self.app = app
        self.gate = gate  # a RequestGate around `lane`
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope[MATCHED_KEY] = self.lane.match(scope)
        if route is None:  # the app's own lane then knows it is not one of its requests
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # as Starlette sets it: routes reach the server through it
        await self.gate(scope, receive, send)
