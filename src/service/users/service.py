"""Accounts: registration, credentials, profile updates, e-mail verification and password reset (B7).

All SQL for users lives here. A mailed link token is consumed by one conditional UPDATE (unused, unexpired, this
hash): of two requests racing with one token, exactly one gets its row back.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db import Query, Reads, later_than, utcnow
from service.core.errors import Conflict, Forbidden, Unauthorized, Unprocessable
from service.core.security import hash_password, token_hash, verify_password
from service.outbox import service as outbox_service
from service.sessions.models import UserSession
from service.users.models import EmailToken, Role, TokenPurpose, User, UserStatus

TAKEN = "has already been taken"

_users: Table = User.__table__  # type: ignore[assignment]  # a declarative class's table is a Table


@dataclass(frozen=True, slots=True)
class AuthUser:
    """The caller, read afresh on every request (so a suspension or a new role applies at once): a plain row."""

    id: int
    username: str
    email: str
    bio: str | None
    image: str | None
    role: Role
    status: UserStatus
    email_verified: bool
    session_id: int  # the session the access token belongs to (B5)
    session_used_at: datetime  # when that session was last recorded as used


_sessions: Table = UserSession.__table__  # type: ignore[assignment]

# Built once: the statement every authenticated request runs. The session and its user together, by the session's
# primary key: one indexed lookup answers "is this token's session still open, and who is it" (revoked sessions
# are filtered here, expiry is checked by the caller). Read as a plain row: no ORM.
_AUTH_USER = Query(
    select(
        _users.c.id,
        _users.c.username,
        _users.c.email,
        _users.c.bio,
        _users.c.image,
        _users.c.role,
        _users.c.status,
        _users.c.email_verified,
        _sessions.c.id,
        _sessions.c.last_used_at,
        _sessions.c.expires_at,
    )
    .join(_users, _users.c.id == _sessions.c.user_id)
    .where(_sessions.c.id == bindparam("session_id"), _sessions.c.user_id == bindparam("user_id"))
    .where(_sessions.c.revoked_at.is_(None))
)


async def get_auth_user(db: Reads, user_id: int, session_id: int) -> AuthUser | None:
    """The token's user, if its session is open (neither revoked nor expired); None otherwise."""
    row = await _AUTH_USER.first(db, user_id=user_id, session_id=session_id)
    if row is None:
        return None
    user_id, username, email, bio, image, role, status, verified, session_id, used_at, expires_at = row
    if expires_at <= utcnow():
        return None
    return AuthUser(
        user_id, username, email, bio, image, Role(role), UserStatus(status), bool(verified), session_id, used_at
    )


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.scalars(select(User).where(func.lower(User.username) == username.lower()))
    return result.one_or_none()


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.scalars(select(User).where(func.lower(User.email) == email.lower()))
    return result.one_or_none()


async def _raise_if_taken(
    session: AsyncSession, *, username: str | None, email: str | None, exclude_id: int | None = None
) -> None:
    """409 on the first field another account already holds (case-insensitive; oneself excluded)."""
    conditions = []
    if username is not None:
        conditions.append(func.lower(User.username) == username.lower())
    if email is not None:
        conditions.append(func.lower(User.email) == email.lower())
    if not conditions:
        return
    stmt = select(User.username, User.email).where(or_(*conditions))
    if exclude_id is not None:
        stmt = stmt.where(User.id != exclude_id)
    for other_username, other_email in (await session.execute(stmt)).all():
        if username is not None and other_username.lower() == username.lower():
            raise Conflict("username", TAKEN)
        if email is not None and other_email.lower() == email.lower():
            raise Conflict("email", TAKEN)


async def _flush_unique(session: AsyncSession, user: User, *, username: str | None, email: str | None) -> None:
    """Flush inside a savepoint: a concurrent insert of the same name becomes a 409, not a 500."""
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError:
        await _raise_if_taken(session, username=username, email=email, exclude_id=user.id)
        raise Conflict("username" if username is not None else "email", TAKEN) from None


async def create_user(
    session: AsyncSession,
    *,
    username: str,
    email: str,
    password: str,
    role: Role = Role.USER,
    email_verified: bool = False,
) -> User:
    await _raise_if_taken(session, username=username, email=email)
    user = User(
        username=username,
        email=email,
        password_hash=await hash_password(password),
        role=role,
        email_verified=email_verified,
    )
    await _flush_unique(session, user, username=username, email=email)
    return user


async def authenticate(session: AsyncSession, *, email: str, password: str) -> User:
    """The account for these credentials. An unknown e-mail costs the same Argon2 work as a wrong password."""
    user = await get_by_email(session, email)
    ok, new_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not ok:
        raise Unauthorized("credentials", "invalid")
    if user.status is not UserStatus.ACTIVE:
        raise Forbidden("account", "is suspended")
    if new_hash is not None:  # parameters of the hash changed since it was made: upgrade it transparently
        user.password_hash = new_hash
    return user


async def update_user(session: AsyncSession, user: User, changes: dict[str, Any]) -> User:
    await _raise_if_taken(session, username=changes.get("username"), email=changes.get("email"), exclude_id=user.id)
    if "password" in changes:
        user.password_hash = await hash_password(changes.pop("password"))
        await _void_tokens(session, user.id, TokenPurpose.RESET)  # a reset link mailed before is no longer wanted
    if "email" in changes and changes["email"].lower() != user.email.lower():
        # A new address is unproven; links mailed to the old one prove nothing about it (B7).
        user.email_verified = False
        await _void_tokens(session, user.id)
    for field in ("username", "email", "bio", "image"):
        if field in changes:
            setattr(user, field, changes[field])
    user.updated_at = later_than(user.updated_at)
    await _flush_unique(session, user, username=changes.get("username"), email=changes.get("email"))
    return user


# ---------------------------------------------------------------------------------------------------------------
# B7: link tokens mailed for e-mail verification and password reset.

_tokens: Table = EmailToken.__table__  # type: ignore[assignment]

VERIFY_TEMPLATE = "verify_email"
RESET_TEMPLATE = "password_reset"


@dataclass(frozen=True, slots=True)
class Links:
    """Where mailed links point (the frontend) and how long their tokens live: from the settings."""

    frontend_url: str
    verification_ttl: timedelta
    reset_ttl: timedelta

    def url(self, path: str, token: str) -> str:
        return f"{self.frontend_url.rstrip('/')}{path}?token={token}"  # token_urlsafe: nothing to escape


def _valid_for(ttl: timedelta) -> str:
    """``48 hours``, ``1 hour``, ``30 minutes``: how the mail states the link's lifetime."""
    minutes = max(1, int(ttl.total_seconds()) // 60)
    amount, unit = (minutes // 60, "hour") if minutes % 60 == 0 else (minutes, "minute")
    return f"{amount} {unit}{'' if amount == 1 else 's'}"


def _token_row(user_id: int | None, email: str, purpose: TokenPurpose, ttl: timedelta) -> tuple[str, dict[str, Any]]:
    """A new random token (256 bits) and the row that stores only its hash."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = {
        "user_id": user_id,
        "purpose": purpose,
        "token_hash": token_hash(token),
        "email": email,
        "created_at": now,
        "expires_at": now + ttl,
    }
    return token, row


async def send_verification(session: AsyncSession, user: User, links: Links) -> None:
    """Mail ``user`` a link that verifies their current address: an outbox row in the caller's transaction."""
    token, row = _token_row(user.id, user.email, TokenPurpose.VERIFY, links.verification_ttl)
    await session.execute(insert(_tokens).values(**row))
    context = {
        "username": user.username,
        "link": links.url("/verify", token),
        "valid_for": _valid_for(links.verification_ttl),
    }
    await outbox_service.emit(session, "email", {"to": user.email, "template": VERIFY_TEMPLATE, "context": context})


async def resend_verification(session: AsyncSession, user_id: int, links: Links) -> None:
    """A new verification mail, unless the address is verified already (then nothing is sent)."""
    user = await session.get(User, user_id)
    if user is not None and not user.email_verified:
        await send_verification(session, user, links)


async def request_password_reset(session: AsyncSession, email: str, links: Links) -> None:
    """Mail a reset link if an account has this address; the same statements run when none has (no enumeration
    by timing): the token row and the outbox row are written in a savepoint, kept only for a real account."""
    user = await get_by_email(session, email)
    token, row = _token_row(
        user.id if user else None, user.email if user else email, TokenPurpose.RESET, links.reset_ttl
    )
    context = {
        "username": user.username if user else "",
        "link": links.url("/reset-password", token),
        "valid_for": _valid_for(links.reset_ttl),
    }
    savepoint = await session.begin_nested()
    await session.execute(insert(_tokens).values(**row))
    mail = {"to": row["email"], "template": RESET_TEMPLATE, "context": context}
    await outbox_service.emit(session, "email", mail)
    if user is None:
        await savepoint.rollback()
        return
    await savepoint.commit()


def _invalid_token() -> Unprocessable:
    return Unprocessable("token", "is invalid")


async def _consume(session: AsyncSession, token: str, purpose: TokenPurpose) -> User:
    """Mark the token used and return its account; 422 ``token`` when it is unknown, used, expired, or was sent to
    an address the account no longer has. One conditional UPDATE: of two racing requests only one gets the row."""
    now, hashed = utcnow(), token_hash(token)
    mine = (_tokens.c.token_hash == hashed, _tokens.c.purpose == purpose)
    won = (
        await session.execute(
            update(_tokens)
            .where(*mine, _tokens.c.used_at.is_(None), _tokens.c.expires_at > now)
            .values(used_at=now)
            .returning(_tokens.c.user_id, _tokens.c.email)
        )
    ).first()
    if won is None:
        expired = await session.scalar(
            select(literal(True)).where(*mine, _tokens.c.used_at.is_(None), _tokens.c.expires_at <= now)
        )
        raise Unprocessable("token", "has expired") if expired else _invalid_token()
    user = await session.get(User, won.user_id) if won.user_id is not None else None
    if user is None or user.email.lower() != won.email.lower():
        raise _invalid_token()
    return user


async def verify_email(session: AsyncSession, token: str) -> User:
    """``POST /users/verify``: the account whose address the token verifies. A suspended one gets no session."""
    user = await _consume(session, token, TokenPurpose.VERIFY)
    if user.status is not UserStatus.ACTIVE:
        raise Forbidden("account", "is suspended")
    user.email_verified = True
    return user


async def reset_password(session: AsyncSession, token: str, password: str) -> User:
    """``POST /users/password-reset/confirm``: the new password is set and every other reset link voided; the
    caller revokes the sessions. The link reached the account's address, so that address is verified too."""
    password_hash = await hash_password(password)  # before the UPDATE: its row lock is held until the commit
    user = await _consume(session, token, TokenPurpose.RESET)
    user.password_hash = password_hash
    user.email_verified = True
    user.updated_at = later_than(user.updated_at)
    await _void_tokens(session, user.id, TokenPurpose.RESET)
    return user


async def _void_tokens(session: AsyncSession, user_id: int, purpose: TokenPurpose | None = None) -> None:
    """Delete the account's unused tokens (of one purpose, or all): their links stop working."""
    stmt = delete(_tokens).where(_tokens.c.user_id == user_id, _tokens.c.used_at.is_(None))
    if purpose is not None:
        stmt = stmt.where(_tokens.c.purpose == purpose)
    await session.execute(stmt)
