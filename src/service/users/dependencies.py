"""Who is calling: the JWT in ``Authorization`` (``Token`` or ``Bearer``) resolved to an active user.

Every dependency here is ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop that
costs more than the work. A token costs one indexed statement (its session and user, by the session's primary
key), nothing else.
"""

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.config import Settings
from service.core.db import Database, Reads, ReadsDep, utcnow
from service.core.errors import Forbidden, Unauthorized, requires_token
from service.core.logging import user_id_var
from service.core.security import decode_access_token
from service.sessions import service as sessions_service
from service.users import service as users_service
from service.users.models import UserStatus
from service.users.service import AuthUser

_F = TypeVar("_F", bound=Callable[..., Any])
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Endpoints an unverified user may still write to when ``require_verified_email`` is on: what it takes to get
# verified (resend, correcting the address) or to leave (logout, ending sessions).
_UNVERIFIED_ALLOWED: set[Callable[..., Any]] = set()


def allow_unverified(endpoint: _F) -> _F:
    _UNVERIFIED_ALLOWED.add(endpoint)
    return endpoint


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings  # create_app's own copy: nothing to override in tests
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


class Authentication(SecurityBase):
    """The caller, from ``Authorization: Token <jwt>`` (or ``Bearer <jwt>``, what Swagger UI's Authorize sends).

    One dependency that reads the header, checks the token and loads the user with one indexed statement. It is
    its own security scheme (a ``SecurityBase``), so OpenAPI documents the token without a second dependency:
    every dependency FastAPI solves costs about 20 us a request (profiled), and this one runs on nearly all.
    """

    def __init__(self, *, required: bool) -> None:
        self.required = required
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description="Paste the token from register or login. Both `Token <jwt>` and `Bearer <jwt>` are accepted.",
        )
        self.scheme_name = "TokenAuth"

    async def __call__(self, request: Request, db: ReadsDep) -> AuthUser | None:
        header = request.headers.get("authorization")
        if header is None:
            if self.required:
                raise Unauthorized("token", "is missing")
            return None
        settings: Settings = request.app.state.settings
        claims = decode_access_token(
            parse_authorization(header), secret=settings.jwt_secret(), algorithm=settings.jwt_algorithm
        )
        user = await users_service.get_auth_user(db, claims.user_id, claims.session_id)
        # Deleted, suspended, logged out or revoked: refused at once, on every instance (the check is the database).
        if user is None or user.status is not UserStatus.ACTIVE:
            raise Unauthorized("token", "is invalid")
        if (
            settings.require_verified_email
            and not user.email_verified
            and request.method not in _READ_METHODS
            and request.scope.get("endpoint") not in _UNVERIFIED_ALLOWED
        ):
            raise Forbidden("email", "is not verified")
        if utcnow() - user.session_used_at > settings.session_touch_interval:
            await _touch(request, db, user.session_id)
        user_id_var.set(user.id)
        return user


async def _touch(request: Request, db: Reads, session_id: int) -> None:
    """Move the session's lastUsedAt: in a write route's own transaction, else in a short one of its own (a read
    route's connection does not commit). Throttled by the caller to once per ``session_touch_interval``."""
    if isinstance(db, AsyncSession):
        await sessions_service.touch(db, session_id)
        return
    database: Database = request.state.database
    async with database.writer() as session:
        await sessions_service.touch(session, session_id)
        await session.commit()


def parse_authorization(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("token", "bearer") or not token:
        raise Unauthorized("token", "is invalid")
    return token


optional_user = Authentication(required=False)
current_user = requires_token(Authentication(required=True))

# For routes where a token is optional: FastAPI appends this to the operation's own [{"TokenAuth": []}], so the
# schema says "TokenAuth, or nothing" (an anonymous call is fine).
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}

CurrentUser = Annotated[AuthUser, Depends(current_user)]
OptionalUser = Annotated[AuthUser | None, Depends(optional_user)]
# Roles: users/permissions.py (the permission table and its ``require(...)`` dependencies).
