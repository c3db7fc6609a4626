"""Accounts: registration, credentials, profile updates. All SQL for users lives here."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db import Query, Reads, later_than, utcnow
from service.core.errors import Conflict, Forbidden, Unauthorized
from service.core.security import hash_password, verify_password
from service.sessions.models import UserSession
from service.users.models import Role, User, UserStatus

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
    user_id, username, email, bio, image, role, status, session_id, used_at, expires_at = row
    if expires_at <= utcnow():
        return None
    return AuthUser(user_id, username, email, bio, image, Role(role), UserStatus(status), session_id, used_at)


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
    session: AsyncSession, *, username: str, email: str, password: str, role: Role = Role.USER
) -> User:
    await _raise_if_taken(session, username=username, email=email)
    user = User(username=username, email=email, password_hash=await hash_password(password), role=role)
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
    for field in ("username", "email", "bio", "image"):
        if field in changes:
            setattr(user, field, changes[field])
    user.updated_at = later_than(user.updated_at)
    await _flush_unique(session, user, username=changes.get("username"), email=changes.get("email"))
    return user
