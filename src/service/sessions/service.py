"""Sessions (contract B5): opened by login and registration, renewed by refresh, ended by logout or revocation.

All SQL for sessions lives here. A refresh is one conditional UPDATE (the row whose current refresh hash is the
presented one): of two requests racing with one token, exactly one matches it, whatever the interleaving; the
other then finds the token among the spent ones and, inside the grace period, gets the same successor.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.core.db import changed_rows, utcnow
from service.core.errors import NotFound, Unauthorized
from service.core.security import new_refresh_token, next_refresh_token, token_hash
from service.sessions.models import SpentRefreshToken, UserSession

_sessions: Table = UserSession.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
_spent: Table = SpentRefreshToken.__table__  # type: ignore[assignment]

USER_AGENT_MAX = 512


def _invalid_refresh() -> Unauthorized:
    return Unauthorized("refreshToken", "is invalid")


@dataclass(frozen=True, slots=True)
class Opened:
    """A session just opened or renewed, and the refresh token to hand to the client (shown once, never stored)."""

    session_id: int
    user_id: int
    refresh_token: str


async def open_session(
    session: AsyncSession, user_id: int, *, ttl: timedelta, user_agent: str | None, ip: str | None
) -> Opened:
    now = utcnow()
    refresh = new_refresh_token()
    session_id = (
        await session.execute(
            insert(_sessions)
            .values(
                user_id=user_id,
                refresh_hash=token_hash(refresh),
                created_at=now,
                last_used_at=now,
                expires_at=now + ttl,
                user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
                ip=ip,
            )
            .returning(_sessions.c.id)
        )
    ).scalar_one()
    return Opened(session_id, user_id, refresh)


class RefreshReused(Unauthorized):
    """A spent refresh token came back outside the grace period: the session has been revoked (and committed)."""


async def refresh(session: AsyncSession, token: str, *, secret: str, ttl: timedelta, grace: timedelta) -> Opened:
    """Exchange ``token`` for its successor. 401 ``refreshToken`` when it is unknown, spent, revoked or expired.

    The reuse of a spent token revokes its whole session (someone else holds a copy) and commits that revocation
    before raising: the request fails, the revocation stays.
    """
    now = utcnow()
    presented, successor = token_hash(token), next_refresh_token(token, secret=secret)
    won = (
        await session.execute(
            update(_sessions)
            .where(
                _sessions.c.refresh_hash == presented, _sessions.c.revoked_at.is_(None), _sessions.c.expires_at > now
            )
            .values(refresh_hash=token_hash(successor), last_used_at=now, expires_at=now + ttl)
            .returning(_sessions.c.id, _sessions.c.user_id)
        )
    ).first()
    if won is not None:
        await session.execute(insert(_spent).values(token_hash=presented, session_id=won.id, spent_at=now))
        return Opened(won.id, won.user_id, successor)

    spent = (
        await session.execute(
            select(
                _sessions.c.id,
                _sessions.c.user_id,
                _sessions.c.refresh_hash,
                _sessions.c.revoked_at,
                _sessions.c.expires_at,
                _spent.c.spent_at,
            )
            .join(_sessions, _sessions.c.id == _spent.c.session_id)
            .where(_spent.c.token_hash == presented)
        )
    ).first()
    if spent is None:
        raise _invalid_refresh()  # never issued, or its session was pruned; or an expired session's current token
    active = spent.revoked_at is None and spent.expires_at > now
    if active and spent.spent_at > now - grace and spent.refresh_hash == token_hash(successor):
        return Opened(spent.id, spent.user_id, successor)  # the other tab of a race: the same successor
    if active:
        await session.execute(update(_sessions).where(_sessions.c.id == spent.id).values(revoked_at=now))
        await session.commit()  # the failure below must not roll the revocation back
        raise RefreshReused("refreshToken", "is invalid")
    raise _invalid_refresh()


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(_sessions.c.revoked_at.is_(None), _sessions.c.expires_at > now)


async def revoke(session: AsyncSession, user_id: int, *, only: int | None = None, keep: int | None = None) -> int:
    """Revoke the user's active sessions: ``only`` that one, or all but ``keep``, or all. Returns how many."""
    now = utcnow()
    stmt = update(_sessions).where(_sessions.c.user_id == user_id, _active(now)).values(revoked_at=now)
    if only is not None:
        stmt = stmt.where(_sessions.c.id == only)
    if keep is not None:
        stmt = stmt.where(_sessions.c.id != keep)
    return await changed_rows(session, stmt)


async def revoke_one(session: AsyncSession, user_id: int, raw_id: str) -> None:
    """``DELETE /user/sessions/{id}``: one of the caller's active sessions, else 404 (someone else's included)."""
    # ASCII digits that fit a BIGINT (as comment ids): a longer number names no session, and the driver would refuse it.
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        raise NotFound("session", "not found")
    if not await revoke(session, user_id, only=int(raw_id)):
        raise NotFound("session", "not found")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    ip: str | None


async def list_active(conn: AsyncConnection, user_id: int) -> list[SessionInfo]:
    rows = await conn.execute(
        select(_sessions.c.id, _sessions.c.created_at, _sessions.c.last_used_at, _sessions.c.user_agent, _sessions.c.ip)
        .where(_sessions.c.user_id == user_id, _active(utcnow()))
        .order_by(_sessions.c.last_used_at.desc(), _sessions.c.id.desc())
    )
    return [SessionInfo(*row) for row in rows]


async def touch(session: AsyncSession, session_id: int) -> None:
    """Record that the session was used now (called at most once per ``session_touch_interval``)."""
    await session.execute(update(_sessions).where(_sessions.c.id == session_id).values(last_used_at=utcnow()))


async def prune(session: AsyncSession) -> int:
    """Delete revoked and expired sessions (their spent tokens go with them). Returns how many."""
    now = utcnow()
    return await changed_rows(
        session, delete(_sessions).where(or_(_sessions.c.revoked_at.is_not(None), _sessions.c.expires_at <= now))
    )
