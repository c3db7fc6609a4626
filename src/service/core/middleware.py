"""What the service does around every HTTP request, in one pure-ASGI layer.

In the order a request meets them: a request id (accepted or made) bound to every log line; CORS preflights,
answered before routing and authentication; a body-size limit; then the app. On the way out every response,
errors included, gets the same headers (request id, ``nosniff``, ``no-store`` when a token was sent, CORS),
and an exception no handler took becomes the clean 500 envelope. Then one access-log line and the metrics.

One layer rather than one per concern: each ASGI layer wraps ``send`` once more and costs a few microseconds a
request, and five of them came to a tenth of a cheap request's CPU (profiled).
"""

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


def _error_response(status: int, field: str, message: str) -> tuple[Message, Message]:
    body = orjson.dumps({"errors": {field: [message]}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


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


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it on untouched."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


class CORSPolicy:
    """Which origins may call the API from a browser, and the headers a preflight answer carries.

    Unlike Starlette's, a refused preflight gets the JSON error envelope (403 ``origin``), never a text body.
    """

    ALLOW_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
    ALLOW_HEADERS = b"Authorization, Content-Type, X-Request-ID"
    EXPOSE_HEADERS = "X-Request-ID"
    MAX_AGE = b"600"

    def __init__(self, allow_origins: list[str]) -> None:
        self.allow_all = "*" in allow_origins
        self.allow_origins = frozenset(origin.strip().rstrip("/") for origin in allow_origins)

    def allows(self, origin: str) -> bool:
        return self.allow_all or origin in self.allow_origins

    def preflight(self, origin: str) -> tuple[Message, Message]:
        if not self.allows(origin):
            start, body = _error_response(403, "origin", "is not allowed")
            start["headers"].append((b"vary", b"Origin"))
            return start, body
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", self.ALLOW_METHODS),
            (b"access-control-allow-headers", self.ALLOW_HEADERS),
            (b"access-control-expose-headers", self.EXPOSE_HEADERS.encode()),
            (b"access-control-max-age", self.MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        return {"type": "http.response.start", "status": 204, "headers": headers}, {"type": "http.response.body"}


# The reads whose anonymous answer is the same for every anonymous caller (no viewer-dependent field is set without a
# token), so a shared cache (a CDN, nginx proxy_cache) may keep it for ``public_cache_max_age`` seconds.
PUBLIC_ROUTES = frozenset(
    {
        "/api/tags",
        "/api/articles",
        "/api/articles/{slug}",
        "/api/articles/{slug}/comments",
        "/api/profiles/{username}",
    }
)


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        allow_origins: list[str],
        max_body_size: int,
        public_cache_max_age: int = 0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.cors = CORSPolicy(allow_origins)
        self.max_body_size = max_body_size
        # Made once: the header every cacheable anonymous answer carries (None: caching is off).
        self.public_cache = f"public, max-age={public_cache_max_age}" if public_cache_max_age > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        rid_token = request_id_var.set(request_id)
        uid_token = user_id_var.set(None)
        scope.setdefault("state", {})["request_id"] = request_id
        origin = _header(scope, b"origin")
        has_token = _header(scope, b"authorization") is not None
        started = time.perf_counter()
        status_code = 500
        response_started = False
        self.metrics.in_progress.inc()

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                if has_token:
                    headers["Cache-Control"] = "no-store"
                    headers.add_vary_header("Authorization")
                elif (
                    self.public_cache is not None
                    and status_code == 200
                    and scope["method"] in ("GET", "HEAD")
                    and _route(scope) in PUBLIC_ROUTES
                ):
                    headers["Cache-Control"] = self.public_cache
                    headers.add_vary_header("Authorization")  # a signed-in request is never served this copy
                if origin is not None:
                    headers.add_vary_header("Origin")
                    if self.cors.allows(origin):
                        headers["Access-Control-Allow-Origin"] = origin
                        headers["Access-Control-Expose-Headers"] = self.cors.EXPOSE_HEADERS
            await send(message)

        async def send_error(status: int, field: str, message: str) -> None:
            for part in _error_response(status, field, message):
                await send_with_headers(part)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    raise _BodyTooLarge()
            return message

        try:
            if origin is not None and scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                for part in self.cors.preflight(origin):  # before routing and authentication
                    status_code = part.get("status", status_code)
                    await send(self._identified(part, request_id))
                return
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_size:
                await send_error(413, "request", "is too large")
                return
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not response_started:
                await send_error(413, "request", "is too large")
        except Exception:
            error_logger.exception("unhandled error", extra={"method": scope["method"], "path": _route(scope)})
            if response_started:
                raise  # nothing clean can be sent any more: let the server close the connection
            await send_error(500, "server", "internal error")
        finally:
            self._record(scope, status_code, time.perf_counter() - started)
            user_id_var.reset(uid_token)
            request_id_var.reset(rid_token)

    @staticmethod
    def _identified(message: Message, request_id: str) -> Message:
        if message["type"] == "http.response.start":
            message["headers"] += [(b"x-request-id", request_id.encode()), (b"x-content-type-options", b"nosniff")]
        return message

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        self.metrics.in_progress.dec()
        self.metrics.observe(scope["method"], route, status, seconds)
        logger.info(
            "%s %s %s",
            scope["method"],
            route,
            status,
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "client": (scope.get("client") or ("-",))[0],
            },
        )
