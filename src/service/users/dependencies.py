"""Who is calling: the JWT in ``Authorization`` (``Token`` or ``Bearer``) resolved to an active user."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from service.core.config import Settings, get_settings
from service.core.db import SessionDep
from service.core.errors import Forbidden, Unauthorized, requires_token
from service.core.logging import user_id_var
from service.core.security import decode_access_token
from service.users import service as users_service
from service.users.models import Role, User, UserStatus

SettingsDep = Annotated[Settings, Depends(get_settings)]


class AuthorizationHeader(SecurityBase):
    """Documents a bearer JWT (Swagger UI's Authorize sends ``Bearer <token>``) and hands over the raw header,
    so the RealWorld ``Token <jwt>`` scheme is accepted too."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT",
            description="Paste the token from register or login. Both `Token <jwt>` and `Bearer <jwt>` are accepted.",
        )
        self.scheme_name = "TokenAuth"

    async def __call__(self, request: Request) -> str | None:
        return request.headers.get("Authorization")


auth_header = AuthorizationHeader()


def parse_authorization(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("token", "bearer") or not token:
        raise Unauthorized("token", "is invalid")
    return token


async def get_optional_user(
    session: SessionDep, settings: SettingsDep, header: Annotated[str | None, Depends(auth_header)]
) -> User | None:
    if header is None:
        return None
    claims = decode_access_token(
        parse_authorization(header), secret=settings.jwt_secret(), algorithm=settings.jwt_algorithm
    )
    user = await users_service.get_by_id(session, claims.user_id)
    if user is None or user.status is not UserStatus.ACTIVE:  # deleted or suspended: refused at once
        raise Unauthorized("token", "is invalid")
    user_id_var.set(user.id)
    return user


@requires_token
async def get_current_user(user: Annotated[User | None, Depends(get_optional_user)]) -> User:
    if user is None:
        raise Unauthorized("token", "is missing")
    return user


# For routes where a token is optional: FastAPI appends this to the operation's own [{"TokenAuth": []}], so the
# schema says "TokenAuth, or nothing" (an anonymous call is fine).
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}

CurrentUser = Annotated[User, Depends(get_current_user)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


class RequireRole:
    def __init__(self, *allowed: Role) -> None:
        self.allowed = frozenset(allowed)

    async def __call__(self, user: CurrentUser) -> User:
        if user.role not in self.allowed:  # read from the DB row: a demotion applies on the next request
            raise Forbidden("role", "forbidden")
        return user


StaffUser = Annotated[User, Depends(RequireRole(Role.MODERATOR, Role.ADMIN))]
AdminUser = Annotated[User, Depends(RequireRole(Role.ADMIN))]
