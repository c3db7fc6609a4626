"""The admin API's rules (contract B4): list users, change a role or a status, delete an account. Its SQL lives here.

Role and status changes and deletions are serialised (``_serialise``): each takes one lock first, then re-reads
its actor and counts the other active admins under it. Two admins demoting each other (or themselves) at the same
moment therefore queue; the second sees the first's commit and is refused (403 if it was demoted itself, 409
``last admin`` if it would now remove the last active admin). Every change writes its audit entry in the same
transaction.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.articles import counters
from service.audit import service as audit
from service.audit.service import SYSTEM, Actor
from service.core.db import Reads, storable_text
from service.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from service.sessions import service as sessions_service
from service.users.models import Role, User, UserStatus
from service.users.permissions import Action, role_can
from service.users.service import AuthUser

_users: Table = User.__table__  # type: ignore[assignment]  # a declarative class's table is a Table

# pg_advisory_xact_lock's key for "admin changes to roles, statuses and accounts" (any fixed 64-bit number unique
# within this database). Taken before any row lock, and by nothing on the counters' paths, so it never joins a
# cycle with their lock order (articles/counters.py).
ADMIN_CHANGES_LOCK = 0x0C0DD17A_0000_0001


@dataclass(frozen=True, slots=True)
class UserView:
    id: int
    username: str
    email: str
    role: Role
    status: UserStatus
    created_at: datetime


_USER_COLUMNS = (
    _users.c.id,
    _users.c.username,
    _users.c.email,
    _users.c.role,
    _users.c.status,
    _users.c.created_at,
)


def _to_view(row: Any) -> UserView:
    user_id, username, email, role, status, created_at = row
    return UserView(user_id, username, email, Role(role), UserStatus(status), created_at)


def _filters(search: str | None, role: Role | None, status: UserStatus | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if search:
        fragment = search.lower()
        conditions.append(
            or_(
                func.lower(_users.c.username).contains(fragment, autoescape=True),  # % and _ match themselves
                func.lower(_users.c.email).contains(fragment, autoescape=True),
            )
        )
    if role is not None:
        conditions.append(_users.c.role == role)
    if status is not None:
        conditions.append(_users.c.status == status)
    return conditions


async def list_users(
    db: Reads, *, search: str | None, role: Role | None, status: UserStatus | None, limit: int, offset: int
) -> tuple[list[UserView], int]:
    """Newest first (ties: the later-created first), with the exact number of matches: two statements."""
    if search is not None and not storable_text(search):
        return [], 0  # text no row can hold matches nothing
    conditions = _filters(search, role, status)
    total = int((await db.execute(select(func.count()).select_from(_users).where(*conditions))).scalar_one())
    if total <= offset:
        return [], total
    page = (
        select(*_USER_COLUMNS)
        .where(*conditions)
        .order_by(_users.c.created_at.desc(), _users.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_to_view(row) for row in (await db.execute(page)).all()], total


# ---------------------------------------------------------------------------------------------------------------
# Changes


async def _serialise(session: AsyncSession) -> None:
    """Queue admin changes one behind the other until commit. PostgreSQL: a transaction-level advisory lock. SQLite
    needs nothing: a write transaction begins IMMEDIATE, so there is one writer at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADMIN_CHANGES_LOCK})


async def _acting(session: AsyncSession, by: AuthUser | None, actions: Sequence[Action]) -> Actor:
    """The actor as it is now, under the lock: the request authenticated a moment ago, perhaps before a concurrent
    change to its own account committed. ``by=None`` is the command line, which may do anything."""
    if by is None:
        return SYSTEM
    row = (
        await session.execute(select(_users.c.username, _users.c.role, _users.c.status).where(_users.c.id == by.id))
    ).first()
    if row is None or UserStatus(row.status) is not UserStatus.ACTIVE:  # deleted or suspended meanwhile
        raise Unauthorized("token", "is invalid")
    if not all(role_can(Role(row.role), action) for action in actions):  # demoted meanwhile
        raise Forbidden("role", "forbidden")
    return Actor(by.id, row.username)


async def _target(session: AsyncSession, username: str) -> UserView:
    if not storable_text(username):
        raise NotFound("user", "not found")
    row = (
        await session.execute(select(*_USER_COLUMNS).where(func.lower(_users.c.username) == username.lower()))
    ).first()
    if row is None:
        raise NotFound("user", "not found")
    return _to_view(row)


def _active_admin(role: Role, status: UserStatus) -> bool:
    return role is Role.ADMIN and status is UserStatus.ACTIVE


async def _keep_an_admin(session: AsyncSession, target: UserView, role: Role | None, status: UserStatus | None) -> None:
    """409 ``last admin`` if the change would leave no active admin. Call under ``_serialise``."""
    if not _active_admin(target.role, target.status) or _active_admin(role or target.role, status or target.status):
        return
    others = await session.scalar(
        select(func.count())
        .select_from(_users)
        .where(_users.c.role == Role.ADMIN, _users.c.status == UserStatus.ACTIVE, _users.c.id != target.id)
    )
    if not others:
        raise Conflict("role", "last admin")


async def change_user(
    session: AsyncSession,
    by: AuthUser | None,
    username: str,
    *,
    role: Role | None = None,
    status: UserStatus | None = None,
) -> UserView:
    """Set the user's role and/or status (``by``: the admin; None: the command line). Returns the user as changed.

    Only a real change is written and audited: setting a value the user already has is a no-op.
    """
    needed = ([Action.CHANGE_ROLE] if role is not None else []) + ([Action.CHANGE_STATUS] if status is not None else [])
    await _serialise(session)
    actor = await _acting(session, by, needed)
    target = await _target(session, username)
    role = role if role is not None and role is not target.role else None
    status = status if status is not None and status is not target.status else None
    if role is None and status is None:
        return target
    await _keep_an_admin(session, target, role, status)
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
        audit.record(session, actor, f"user.role.{role.value}", audit.user_target(target.username))
    if status is not None:
        values["status"] = status
        audit.record(session, actor, f"user.status.{status.value}", audit.user_target(target.username))
        if status is UserStatus.SUSPENDED:  # its tokens already fail (status); lifting it must not revive them
            await sessions_service.revoke(session, target.id)
    await session.execute(update(_users).where(_users.c.id == target.id).values(values))
    return UserView(
        target.id, target.username, target.email, role or target.role, status or target.status, target.created_at
    )


async def delete_user(session: AsyncSession, by: AuthUser, username: str) -> None:
    """Delete the account and everything it made: articles (with their comments, tags and favorites), its comments,
    favorites, follows (both ways) and sessions. Every maintained counter is adjusted in the same transaction.
    Audit entries it wrote stay (they name their actor as text)."""
    await _serialise(session)
    actor = await _acting(session, by, [Action.DELETE_USER])
    target = await _target(session, username)
    await _keep_an_admin(session, target, Role.USER, None)  # for the rule, a deletion is a demotion
    audit.record(session, actor, "user.delete", audit.user_target(target.username))
    await counters.user_removed(session, target.id)
    await session.execute(delete(_users).where(_users.c.id == target.id))  # the foreign keys cascade the rest
