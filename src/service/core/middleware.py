"""Pure ASGI middleware: request id and access log, body-size limit, security headers."""

import logging
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.logging import request_id_var, user_id_var
from service.core.metrics import Metrics

logger = logging.getLogger("service.access")
error_logger = logging.getLogger("service.errors")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _error_body(field: str, message: str) -> bytes:
    return orjson.dumps({"errors": {field: [message]}})


async def _send_error(send: Send, status: int, field: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = _error_body(field, message)
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TrackedSend:
    """Wraps ``send`` and remembers whether the response has started: after that, no error response can be sent."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class RequestContextMiddleware:
    """Outermost layer: binds ``X-Request-ID`` and logs one access line; a last resort for errors in middleware."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        rid_token = request_id_var.set(request_id)
        uid_token = user_id_var.set(None)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_code = 500
        response_started = False
        self.metrics.in_progress.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            error_logger.exception("unhandled error", extra={"method": scope["method"], "path": _route(scope)})
            if not response_started:
                status_code = 500
                await _send_error(send, 500, "server", "internal error", [(b"x-request-id", request_id.encode())])
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            self.metrics.in_progress.dec()
            self.metrics.observe(scope["method"], route, status_code, seconds)
            logger.info(
                "%s %s %s",
                scope["method"],
                route,
                status_code,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status_code,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": (scope.get("client") or ("-",))[0],
                },
            )
            user_id_var.reset(uid_token)
            request_id_var.reset(rid_token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route(scope: MutableMapping[str, Any]) -> str:
    """The route template (``/api/articles/{slug}``), never the raw path: bounded cardinality, no ids in logs."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "<unmatched>"


class ExceptionGuardMiddleware:
    """Innermost layer: an exception no handler took becomes the clean 500 envelope here, inside the CORS and
    header layers, so a browser can read it; the failure is logged once, with the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            error_logger.exception("unhandled error", extra={"method": scope["method"], "path": _route(scope)})
            if tracked.started:
                raise  # nothing clean can be sent any more: let the server close the connection
            await _send_error(send, 500, "server", "internal error", [])


class BodySizeLimitMiddleware:
    """413 for a body over the limit, by ``Content-Length`` or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
            await _send_error(send, 413, "request", "is too large", [])
            return
        received = 0
        tracked = _TrackedSend(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except _BodyTooLarge:
            if not tracked.started:
                await _send_error(send, 413, "request", "is too large", [])


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it on untouched."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class SecurityHeadersMiddleware:
    """``nosniff`` everywhere; ``no-store`` on API responses to requests that carried a token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_token = _header(scope, b"authorization") is not None

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if has_token:
                    headers["Cache-Control"] = "no-store"
                    headers.add_vary_header("Authorization")
            await send(message)

        await self.app(scope, receive, send_wrapper)


class CORSMiddleware:
    """CORS for the configured origins. Preflights are answered here, before routing and authentication.

    Unlike Starlette's, a refused preflight gets the JSON error envelope (403 ``origin``), never a text body.
    """

    ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
    ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
    EXPOSE_HEADERS = "X-Request-ID"
    MAX_AGE = "600"

    def __init__(self, app: ASGIApp, allow_origins: list[str]) -> None:
        self.app = app
        self.allow_all = "*" in allow_origins
        self.allow_origins = frozenset(origin.strip().rstrip("/") for origin in allow_origins)

    def _allowed(self, origin: str) -> bool:
        return self.allow_all or origin in self.allow_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await self._preflight(origin, send)
            return
        allowed = self._allowed(origin)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                if allowed:
                    headers["Access-Control-Allow-Origin"] = origin
                    headers["Access-Control-Expose-Headers"] = self.EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _preflight(self, origin: str, send: Send) -> None:
        if not self._allowed(origin):
            await _send_error(send, 403, "origin", "is not allowed", [(b"vary", b"Origin")])
            return
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", self.ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", self.ALLOW_HEADERS.encode()),
            (b"access-control-expose-headers", self.EXPOSE_HEADERS.encode()),
            (b"access-control-max-age", self.MAX_AGE.encode()),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
