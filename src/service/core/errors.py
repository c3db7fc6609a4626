"""Typed errors and the one handler layer that renders every failure as ``{"errors": {field: [message]}}``."""

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.core.db_health import DatabaseHealth, classify, raised_by_database

logger = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

BLANK = "can't be blank"
INVALID = "is invalid"


class AppError(Exception):
    """An error a client may see: rendered as {"errors": {field: [message]}}."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, field: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message
        self.headers = dict(headers or {})


class Unauthorized(AppError):
    status_code = status.HTTP_401_UNAUTHORIZED


class Forbidden(AppError):
    status_code = status.HTTP_403_FORBIDDEN


class NotFound(AppError):
    status_code = status.HTTP_404_NOT_FOUND


class Conflict(AppError):
    status_code = status.HTTP_409_CONFLICT


class Unprocessable(AppError):
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


class TooManyRequests(AppError):
    """Rate limited (B3): ``{"errors": {"rate": ["limit exceeded"]}}``, ``Retry-After`` in whole seconds (>= 1)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate", "limit exceeded", {"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AppError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class ErrorBody(BaseModel):
    """The error envelope: every error response has this shape."""

    errors: dict[str, list[str]]


def error_response(
    status_code: int, field: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"errors": {field: [message]}}, status_code, headers=dict(headers or {}))


# ---------------------------------------------------------------------------------------------------------------
# Pydantic error types -> Rails-style messages. The one place that decides what a client reads.

_MESSAGES: dict[str, str] = {
    "missing": BLANK,
    "blank": BLANK,
    "string_too_short": "is too short (minimum is {min_length} characters)",
    "string_too_long": "is too long (maximum is {max_length} characters)",
    "too_long": "is too long (maximum is {max_length} items)",
    "too_short": "is too short (minimum is {min_length} items)",
    "less_than_equal": "must be less than or equal to {le}",
    "greater_than_equal": "must be greater than or equal to {ge}",
    "less_than": "must be less than {lt}",
    "greater_than": "must be greater than {gt}",
}


# Our own PydanticCustomError types already carry the client-facing message.
_VERBATIM = frozenset({"blank", "invalid", "message"})


def message_for(error: Mapping[str, Any]) -> str:
    """Rails-style message for one Pydantic error; anything unknown (wrong type, bad format) is ``is invalid``."""
    kind = str(error.get("type", ""))
    if kind in _VERBATIM:
        return str(error.get("msg", INVALID))
    if kind in ("too_long", "too_short") and isinstance(error.get("input"), str):
        kind = f"string_{kind}"  # a length rule applied after a validator reports the generic type
    template = _MESSAGES.get(kind)
    if template is None:
        return INVALID
    ctx = error.get("ctx") or {}
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return INVALID


def _field_of(loc: Sequence[Any], envelope: str | None) -> str:
    """The client-facing field of an error location: the first name below the envelope (``tagList`` for
    ``body.article.tagList.3``; ``email`` for a union member's ``body.user.email.<member>``), else the envelope."""
    parts = [part for part in loc if isinstance(part, str)]
    source = parts[0] if parts and parts[0] in ("body", "query", "path", "header", "cookie") else None
    if source is not None:
        parts = parts[1:]
    if source == "body" and envelope is not None and len(parts) > 1 and parts[0] == envelope:
        return parts[1]
    if parts:
        return parts[0]
    return envelope or "body"


def envelope_key(request: Request) -> str | None:
    """The body's envelope key (``user``, ``article``, ``comment``) of the matched route, if it has one."""
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    annotation = getattr(getattr(body_field, "field_info", None), "annotation", None)
    fields = getattr(annotation, "model_fields", None)
    if isinstance(fields, dict) and len(fields) == 1:
        field_name, info = next(iter(fields.items()))
        return str(info.alias or field_name)
    return None


def validation_errors(errors: Iterable[Mapping[str, Any]], envelope: str | None) -> dict[str, list[str]]:
    """Group Pydantic errors by field. A blank field reports ``can't be blank`` and nothing else."""
    result: dict[str, list[str]] = {}
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = str(error.get("type", ""))
        if kind == "none_required":
            continue  # the None branch of an optional field's union: the other branch says what is wrong
        if kind in ("json_invalid", "model_attributes_type", "dict_type", "model_type") and len(loc) <= 2:
            # unreadable JSON, or a body/envelope that is not an object: name the envelope key
            field = _field_of(loc[:2] if kind != "json_invalid" else loc[:1], envelope)
            message = BLANK if kind == "json_invalid" or len(loc) == 1 else INVALID
        else:
            field = _field_of(loc, envelope)
            message = message_for(error)
        messages = result.setdefault(field, [])
        if BLANK in messages:
            continue
        if message == BLANK:
            messages.clear()
        if message not in messages:
            messages.append(message)
    return result


# Dependencies that demand a token (users.dependencies registers get_current_user here).
_TOKEN_REQUIRED: set[Callable[..., Any]] = set()


def requires_token(func: _F) -> _F:
    _TOKEN_REQUIRED.add(func)
    return func


def _route_requires_token(request: Request) -> bool:
    stack = [getattr(request.scope.get("route"), "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if dependant.call in _TOKEN_REQUIRED:
            return True
        stack.extend(dependant.dependencies)
    return False


def _unreadable_body(request: Request) -> JSONResponse:
    """A body that cannot be read as JSON at all. FastAPI reads it before resolving dependencies, so keep
    "authentication first" here: without a token on a protected route, that is what the client hears about."""
    if "authorization" not in request.headers and _route_requires_token(request):
        return error_response(401, "token", "is missing", {"WWW-Authenticate": 'Token realm="api"'})
    return JSONResponse({"errors": {envelope_key(request) or "request": [BLANK]}}, 422)


def _allowed_methods(request: Request) -> str | None:
    """Every method the API serves at this path (Starlette's 405 names only the first route that matched)."""
    app = request.app
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [
            (compile_path(path)[0], {method.upper() for method in operations})
            for path, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = table
    methods = set().union(*(m for regex, m in table if regex.match(request.url.path)))
    return ", ".join(sorted(methods | {"OPTIONS"})) if methods else None


def register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def handle_app_error(request: Request, exc: AppError) -> JSONResponse:
        headers = dict(exc.headers)
        if isinstance(exc, Unauthorized):
            headers.setdefault("WWW-Authenticate", 'Token realm="api"')
        return error_response(exc.status_code, exc.field, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        # FastAPI reads the JSON before it resolves dependencies: keep "authentication first" for unreadable bodies.
        if any(error.get("type") == "json_invalid" for error in raw):
            return _unreadable_body(request)
        errors = validation_errors(raw, envelope_key(request))
        return JSONResponse({"errors": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_404_NOT_FOUND:
            return error_response(404, "route", "not found", headers)
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
            return error_response(405, "method", "not allowed", headers)
        if exc.status_code == status.HTTP_400_BAD_REQUEST:  # FastAPI could not decode the body (e.g. not UTF-8)
            return _unreadable_body(request)
        if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
            return error_response(413, "request", "is too large", headers)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            headers.setdefault("WWW-Authenticate", 'Token realm="api"')
            return error_response(401, "token", "is missing", headers)
        return error_response(exc.status_code, "request", INVALID, headers)

    # Every error a database can raise reaches this one handler: SQLAlchemy's (the driver's, wrapped), the pool's
    # checkout timeout, and the OSErrors (TimeoutError, ConnectionError...) a driver raises unwrapped on connect or
    # on a client-side timeout. db_health.classify decides; whatever it does not know is a bug: re-raised, it becomes
    # the 500 envelope, logged with its traceback by the middleware.
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(OSError)
    async def handle_database_error(request: Request, exc: Exception) -> JSONResponse:
        failure = classify(exc)
        if failure is None or (isinstance(exc, OSError) and not raised_by_database(exc)):
            raise exc
        _health(request).failed(failure)  # logged once per burst, counted otherwise; never a traceback
        retry_after = str(request.app.state.settings.database_retry_after)
        return error_response(503, "database", "unavailable", {"Retry-After": retry_after})


_UNTRACKED = DatabaseHealth()  # for an app without the lifespan's database state (no request can reach one then)


def _health(request: Request) -> DatabaseHealth:
    health = getattr(getattr(request.state, "database", None), "health", None)
    return health if isinstance(health, DatabaseHealth) else _UNTRACKED


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error envelope for each status an operation can return."""
    descriptions = {
        401: "Missing, invalid or expired token",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Request body too large",
        422: "Validation failed",
        429: "Rate limited",
        503: "Database unavailable",
    }
    return {code: {"model": ErrorBody, "description": descriptions.get(code, "Error")} for code in statuses}
