"""The FastAPI application: routers, and the mapping of every error to problem+json."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

import sparekey
from sparekey.api.batching import VerifyBatcher
from sparekey.api.metrics import Metrics, ResponseCounter
from sparekey.api.problems import (
    MEDIA_TYPE,
    PROBLEMS,
    ProblemModel,
    problem_response,
    to_problem,
)
from sparekey.api.routers import (
    audit,
    device_tokens,
    factors,
    fallback,
    portal_links,
    readiness,
    recovery,
    system,
    users,
    vault_backups,
    verify,
    webauthn,
)
from sparekey.api.sealing import LoopSealer
from sparekey.domain.errors import SparekeyError
from sparekey.runtime import Sparekey
from sparekey.web import install_web, is_web_path, web_error_response

__all__ = ["create_app"]

log = logging.getLogger("sparekey.api")

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemModel, "description": description}
    for status, description in [
        (400, "The body is not valid JSON"),
        (401, "No API key, or not a live one"),
        (403, "The API key lacks the scope"),
        (404, "The user or factor does not exist"),
        (409, "The request conflicts with the current state"),
        (422, "A field is missing or invalid"),
        (429, "Too many wrong codes: locked (see Retry-After) or suspended"),
        (503, "The database is busy; retry"),
    ]
}

_WEB_HTTP = {404: "There is no such page.", 405: "This page does not take that kind of request."}

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_STATUS_SLUGS = {404: "not-found", 405: "method-not-allowed", 415: "unsupported-media-type"}


class SparekeyAPI(FastAPI):
    """FastAPI, with the hot paths answered before its middleware stack.

    Checking a code (and a passkey) is most of the traffic, and FastAPI's and Starlette's layers
    (error middleware, exception middleware, routing through every route, the response counter's
    wrapper) cost about a tenth of such a request. :attr:`hot_routes` are plain Starlette routes
    whose endpoint does its own parsing (see :mod:`sparekey.api.routers.verify`); a POST to one of
    them is answered here, with the same exception handlers and the same response count as the
    stack would apply. Every other request, and every other method on those paths, goes through
    the stack as usual.
    """

    hot_routes: tuple[Route, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.hot_routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    await self._answer_hot(route, {**scope, **child, "app": self}, receive, send)
                    return
        await super().__call__(scope, receive, send)

    async def _answer_hot(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        metrics: Metrics = self.state.metrics
        status = 500  # unless a response starts, as ResponseCounter counts it
        try:
            try:
                response = await route.endpoint(request)
            except Exception as exc:
                response = await self._handle_error(request, exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            metrics.count_response(status)

    async def _handle_error(self, request: Request, exc: Exception) -> Response:
        """The response of the handler registered for the exception's class or nearest base."""
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                return await response if inspect.isawaitable(response) else response
        raise exc  # unreachable: a handler for Exception is always installed


def create_app(
    app: Sparekey,
    *,
    metrics: Metrics | None = None,
    seal_interval: float | None = None,
    freeze_startup_objects: bool = False,
) -> FastAPI:
    """The HTTP application over ``app``. On SQLite its event loop's thread gets connections of
    its own when it starts (:meth:`~sparekey.storage.database.Database.serve_from_this_thread`).
    With ``seal_interval`` (``sparekey serve``) on SQLite, the audit log is sealed on that loop
    every that many seconds, and once more when the application shuts down
    (:mod:`sparekey.api.sealing`); PostgreSQL deployments seal in a thread
    (:class:`~sparekey.services.audit.Sealer`) instead.

    With ``freeze_startup_objects`` (``sparekey serve``, a process of its own) the objects alive
    when the application starts (modules, classes, schemas: some 200,000) are moved out of the
    garbage collector's reach (:func:`gc.freeze`) until it stops. A full collection traversed
    them all, about 100 ms with every request waiting, once every minute or two under load."""

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        app.db.serve_from_this_thread()  # before the first request, on the loop's thread
        if freeze_startup_objects:
            gc.collect()  # garbage made while starting is freed, not frozen
            gc.freeze()
        try:
            async with _sealing(app, seal_interval):
                yield
        finally:
            api.state.verify_batcher.close()
            if freeze_startup_objects:
                gc.unfreeze()

    api = SparekeyAPI(
        title="Sparekey",
        version=sparekey.__version__,
        summary="Two-factor authentication with backup and recovery built in.",
        responses=_ERROR_RESPONSES,
        lifespan=lifespan,
    )
    api.state.sparekey = app
    api.state.metrics = metrics = metrics or Metrics(app)
    api.state.verify_batcher = VerifyBatcher(app.verification, app.db.write_lock)
    api.add_middleware(ResponseCounter, metrics=metrics)
    routers = (
        verify,
        users,
        factors,
        fallback,
        webauthn,
        readiness,
        recovery,
        audit,
        portal_links,
        device_tokens,
        vault_backups,
        system,
    )
    for router in (module.router for module in routers):
        api.include_router(router)
    api.hot_routes = (verify.fast_route, webauthn.fast_route)  # before FastAPI's machinery
    install_web(api)
    _install_error_handlers(api)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


@contextlib.asynccontextmanager
async def _sealing(app: Sparekey, interval: float | None) -> AsyncIterator[None]:
    """On SQLite with an interval, seal the audit log on the running loop while the block runs,
    and once more at its end (see :mod:`sparekey.api.sealing`)."""
    if interval is None or not app.db.is_sqlite:
        yield
        return
    sealer = LoopSealer(app.audit, app.db.write_lock, interval=interval)
    task = asyncio.create_task(sealer.run(), name="audit-sealer")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sealer.round()  # what came in since the last round


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(SparekeyError)
    async def domain_error(request: Request, exc: SparekeyError) -> Response:
        if is_web_path(request.url.path):
            return web_error_response(request, to_problem(exc).status_code, exc.detail)
        return to_problem(exc)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if is_web_path(request.url.path):
            return web_error_response(request, 400, "The address or the form is not valid.")
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return problem_response("malformed-request", "the body is not valid JSON")
        field_errors = [
            {"field": ".".join(str(part) for part in p.get("loc", ())), "message": p.get("msg", "")}
            for p in problems
        ]
        first = field_errors[0] if field_errors else {"field": "", "message": "invalid input"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return problem_response("invalid-input", detail, errors=field_errors)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_web_path(request.url.path):
            return web_error_response(request, exc.status_code, _WEB_HTTP.get(exc.status_code, ""))
        slug = _STATUS_SLUGS.get(exc.status_code)
        if slug is None:
            slug = "malformed-request" if exc.status_code < 500 else "internal-error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(slug, str(exc.detail), headers=headers)

    @api.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", exc.orig)
        if is_web_path(request.url.path):
            return web_error_response(request, 503, "The server is busy. Please try again.")
        return problem_response(
            "unavailable", "the database is busy; retry", headers={"Retry-After": "1"}
        )

    @api.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if is_web_path(request.url.path):
            return web_error_response(request, 500, "The server failed; nothing was changed.")
        return problem_response("internal-error", "the server failed; nothing was changed")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this path (RFC 9110 §15.5.6). Starlette's own 405
    names only the methods of the first route matching the path, and each operation is a route
    of its own: ask the routes about each method instead."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with error bodies declared as application/problem+json."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(
        title=api.title,
        version=api.version,
        summary=api.summary,
        routes=api.routes,
    )
    problem = {"schema": {"$ref": f"#/components/schemas/{ProblemModel.__name__}"}}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:  # whatever the success answer's type
                    response["content"] = {MEDIA_TYPE: problem}
    _hoist_definitions(schema)
    schema.setdefault("info", {})["description"] = (
        "Errors are RFC 9457 problem details; each `type` is a stable URI whose description "
        "this server serves. Problem types: " + ", ".join(sorted(PROBLEMS)) + "."
    )
    api.openapi_schema = schema
    return schema


def _hoist_definitions(schema: dict[str, Any]) -> None:
    """Move the ``$defs`` of JSON Schemas given whole (``openapi_extra``) into the document's
    components, where their ``#/$defs/...`` references are rewritten to point: a ``$defs`` nested
    in an operation does not resolve from the document's root."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})

    def visit(node: object) -> None:
        if isinstance(node, dict):
            for name, definition in node.pop("$defs", {}).items():
                visit(definition)
                components.setdefault(name, definition)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema.get("paths", {}))
