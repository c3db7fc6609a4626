"""Accounts and their sessions: register, log in, refresh, log out, the current user, the caller's sessions;
e-mail verification and password reset (B7)."""

from typing import Literal

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.config import Settings
from service.core.db import ReadDep, SessionDep
from service.core.errors import Unauthorized, error_responses
from service.core.ratelimit import RateLimiterDep
from service.core.schemas import timestamp
from service.core.security import create_access_token
from service.sessions import service as sessions_service
from service.users import service as users_service
from service.users.dependencies import CurrentUser, SettingsDep, allow_unverified
from service.users.models import User, UserStatus
from service.users.schemas import (
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    SessionRead,
    SessionsEnvelope,
    SessionUserEnvelope,
    SessionUserRead,
    UserCreateEnvelope,
    UserEnvelope,
    UserLoginEnvelope,
    UserRead,
    UserUpdateEnvelope,
    VerifyRequest,
)
from service.users.service import AuthUser, Links

router = APIRouter(prefix="/api", tags=["users"])


def _access_token(user_id: int, session_id: int, settings: Settings) -> str:
    return create_access_token(
        user_id,
        session_id,
        secret=settings.jwt_secret(),
        algorithm=settings.jwt_algorithm,
        ttl=settings.access_token_ttl,
    )


def _user_read(user: User | AuthUser, token: str) -> UserRead:
    return UserRead(
        email=user.email,
        token=token,
        username=user.username,
        bio=user.bio,
        image=user.image,
        role=user.role,
        email_verified=user.email_verified,
    )


def _links(settings: Settings) -> Links:
    return Links(settings.frontend_url, settings.verification_token_ttl, settings.password_reset_token_ttl)


def _accepted() -> Response:
    return Response(status_code=status.HTTP_202_ACCEPTED)


def session_envelope(user: User, opened: sessions_service.Opened, settings: Settings) -> SessionUserEnvelope:
    """The user object of register, login and refresh: an access token of the session and its refresh token."""
    read = _user_read(user, _access_token(user.id, opened.session_id, settings))
    return SessionUserEnvelope(user=SessionUserRead(**read.model_dump(), refresh_token=opened.refresh_token))


async def _open_session(session: AsyncSession, user: User, request: Request, settings: Settings) -> SessionUserEnvelope:
    opened = await sessions_service.open_session(
        session,
        user.id,
        ttl=settings.session_ttl,
        user_agent=request.headers.get("user-agent"),
        ip=request.app.state.rate_limiter.client_address(request),  # the client, not the proxy in front
    )
    return session_envelope(user, opened, settings)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Register",
    responses=error_responses(409, 413, 422, 429),
)
async def register(
    body: UserCreateEnvelope, request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep
) -> SessionUserEnvelope:
    await limiter.check_register(limiter.client_address(request))
    data = body.user
    user = await users_service.create_user(session, username=data.username, email=data.email, password=data.password)
    await users_service.send_verification(session, user, _links(settings))
    return await _open_session(session, user, request, settings)


@router.post("/users/login", summary="Log in", responses=error_responses(401, 403, 413, 422, 429))
async def login(
    body: UserLoginEnvelope, request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep
) -> SessionUserEnvelope:
    await limiter.check_login(limiter.client_address(request), body.user.email)
    try:
        user = await users_service.authenticate(session, email=body.user.email, password=body.user.password)
    except Unauthorized:
        await limiter.login_failed(body.user.email)
        raise
    return await _open_session(session, user, request, settings)


@router.post(
    "/users/refresh",
    summary="Exchange a refresh token for new tokens",
    description="The refresh token is single-use: the response carries its successor. Re-using a spent one "
    "revokes the whole session, except for a second request with it within a few seconds (another tab).",
    responses=error_responses(401, 413, 422, 429),
)
async def refresh(
    body: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep
) -> SessionUserEnvelope:
    opened = await sessions_service.refresh(
        session,
        body.refresh_token,
        secret=settings.jwt_secret(),
        ttl=settings.session_ttl,
        grace=settings.refresh_grace,
    )
    # Counted once the session is known (the token rotates; the session id does not). A refusal raises before the
    # commit, so the rotation is rolled back and the client's token stays good for a later retry.
    await limiter.check_refresh(limiter.client_address(request), str(opened.session_id))
    user = await users_service.get_by_id(session, opened.user_id)
    if user is None or user.status is not UserStatus.ACTIVE:  # pragma: no cover - a suspension revokes sessions
        raise Unauthorized("refreshToken", "is invalid")
    return session_envelope(user, opened, settings)


@router.post(
    "/users/verify",
    summary="Verify your e-mail address",
    description="With the token of the link mailed at registration or after an e-mail change. Single-use. "
    "Opens a session, as login does: the response carries a token and a refresh token.",
    responses=error_responses(403, 413, 422),
)
async def verify(
    body: VerifyRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> SessionUserEnvelope:
    user = await users_service.verify_email(session, body.token)
    return await _open_session(session, user, request, settings)


@router.post(
    "/users/verify/resend",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Mail the verification link again",
    description="Nothing is sent when the address is verified already.",
    response_class=Response,
    responses=error_responses(401, 429),
)
@allow_unverified
async def resend_verification(
    user: CurrentUser, request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep
) -> Response:
    await limiter.check_email("verify-resend", limiter.client_address(request), user.email)
    await users_service.resend_verification(session, user.id, _links(settings))
    return _accepted()


@router.post(
    "/users/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Mail a password reset link",
    description="Always 202, whether or not an account has this address (nothing tells which).",
    response_class=Response,
    responses=error_responses(413, 422, 429),
)
async def request_password_reset(
    body: PasswordResetRequest, request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep
) -> Response:
    await limiter.check_email("password-reset", limiter.client_address(request), body.email)
    await users_service.request_password_reset(session, body.email, _links(settings))
    return _accepted()


@router.post(
    "/users/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with a reset link's token",
    description="Single-use. Every session of the account is revoked: log in with the new password.",
    response_class=Response,
    responses=error_responses(413, 422, 429),
)
async def confirm_password_reset(
    body: PasswordResetConfirm, request: Request, session: SessionDep, limiter: RateLimiterDep
) -> Response:
    await limiter.check_email("password-reset-confirm", limiter.client_address(request))
    user = await users_service.reset_password(session, body.token, body.password)
    await sessions_service.revoke(session, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out",
    description="Revokes this session (`local`, the default), the caller's other sessions (`others`), or all of "
    "them (`global`). Access tokens of a revoked session stop working at once.",
    responses=error_responses(401, 422),
)
@allow_unverified
async def logout(
    user: CurrentUser, session: SessionDep, scope: Literal["local", "others", "global"] = "local"
) -> Response:
    if scope == "local":
        await sessions_service.revoke(session, user.id, only=user.session_id)
    elif scope == "others":
        await sessions_service.revoke(session, user.id, keep=user.session_id)
    else:
        await sessions_service.revoke(session, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/user/sessions", summary="Your active sessions", responses=error_responses(401))
async def list_sessions(user: CurrentUser, conn: ReadDep) -> SessionsEnvelope:
    return SessionsEnvelope(
        sessions=[
            SessionRead(
                id=info.id,
                created_at=timestamp(info.created_at),
                last_used_at=timestamp(info.last_used_at),
                user_agent=info.user_agent,
                ip=info.ip,
                current=info.id == user.session_id,
            )
            for info in await sessions_service.list_active(conn, user.id)
        ]
    )


@router.delete(
    "/user/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of your sessions",
    responses=error_responses(401, 404),
)
@allow_unverified
async def revoke_session(session_id: str, user: CurrentUser, session: SessionDep) -> Response:
    await sessions_service.revoke_one(session, user.id, session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/user", summary="Current user", responses=error_responses(401))
async def get_current(user: CurrentUser, settings: SettingsDep) -> UserEnvelope:
    return UserEnvelope(user=_user_read(user, _access_token(user.id, user.session_id, settings)))  # same session


@router.put("/user", summary="Update current user", responses=error_responses(401, 409, 413, 422))
@allow_unverified  # to correct a mistyped address, among others
async def update_current(
    body: UserUpdateEnvelope, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> UserEnvelope:
    changes = body.user.model_dump(exclude_unset=True, by_alias=False)
    account = await users_service.get_by_id(session, user.id)
    if account is None:  # deleted since the token was checked, a moment ago
        raise Unauthorized("token", "is invalid")
    password_changed = "password" in changes
    new_address = "email" in changes and changes["email"].lower() != account.email.lower()
    account = await users_service.update_user(session, account, changes)
    if password_changed:  # whoever else holds a session of this account is logged out (B5)
        await sessions_service.revoke(session, user.id, keep=user.session_id)
    if new_address:  # B7: the new address is unverified until its link is followed
        await users_service.send_verification(session, account, _links(settings))
    return UserEnvelope(user=_user_read(account, _access_token(account.id, user.session_id, settings)))
