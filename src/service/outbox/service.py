"""The outbox's rules and all its SQL: emit an event in the caller's transaction, claim, settle, count, retry.

Delivery is at least once. A deliverer *claims* a due pending row with one conditional UPDATE that counts the
attempt and moves ``next_attempt_at`` a lease ahead: of two deliverers racing for a row, exactly one changes it
(the other's WHERE no longer matches), on PostgreSQL and SQLite alike, and no transaction stays open while the
message is sent. A deliverer that dies mid-send leaves the row pending and due again once the lease has passed;
its attempt stays counted, so an event that kills its deliverer each time still ends dead. The sweep lists due
rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent sweepers pass over each other's rows.
"""

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.core.db import Reads, changed_rows, utcnow
from service.outbox.models import OutboxEvent, OutboxStatus

# Key in a session's ``info`` (set on the app's sessionmaker by outbox/runtime.py) naming who delivers after commit.
DISPATCHER = "outbox_dispatcher"
_PENDING_IDS = "outbox_pending_ids"
ERROR_LIMIT = 500  # characters of last_error kept


class Dispatcher(Protocol):
    def notify(self, event_ids: Sequence[uuid.UUID]) -> None:
        """Called after a commit that wrote (or re-queued) these events; must not block (it schedules work)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int  # this one included
    created_at: datetime


async def emit(session: AsyncSession, kind: str, payload: dict[str, Any]) -> OutboxEvent:
    """Add an event in the caller's transaction (the caller commits: the row exists iff the action committed) and
    have it delivered right after that commit, by the app's dispatcher when the session has one. Without one
    (the command line, tests) the row waits for the next sweep."""
    now = utcnow()
    row = OutboxEvent(
        id=uuid.uuid4(),
        kind=kind,
        payload=payload,
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    await session.flush()  # an unstorable payload fails here, in the caller's code path, not at commit
    notify_after_commit(session, row.id)
    return row


def notify_after_commit(session: AsyncSession, event_id: uuid.UUID) -> None:
    """Hand ``event_id`` to the session's dispatcher once the current transaction commits (nothing if it rolls
    back: the row is gone with it)."""
    if session.info.get(DISPATCHER) is None:
        return
    pending: list[uuid.UUID] | None = session.info.get(_PENDING_IDS)
    if pending is None:
        pending = session.info[_PENDING_IDS] = []
        sync = session.sync_session
        event.listen(sync, "after_commit", _after_commit)
        event.listen(sync, "after_rollback", _after_rollback)
    pending.append(event_id)


def _after_commit(sync: Session) -> None:
    if sync.in_nested_transaction():  # SQLAlchemy also fires this for a savepoint: wait for the real commit
        return
    pending: list[uuid.UUID] = sync.info.get(_PENDING_IDS, [])
    if not pending:
        return
    ids, pending[:] = list(pending), []
    dispatcher: Dispatcher = sync.info[DISPATCHER]
    dispatcher.notify(ids)


def _after_rollback(sync: Session) -> None:
    if sync.in_nested_transaction():  # a savepoint rolled back: events emitted before it still stand
        return
    pending: list[uuid.UUID] = sync.info.get(_PENDING_IDS, [])
    pending.clear()


def backoff(attempts: int, base: timedelta, maximum: timedelta) -> timedelta:
    """The wait after the ``attempts``-th failure: base * 2^(attempts-1), capped, then jittered into its upper
    half, so the events of one outage do not all come back at the same instant."""
    ceiling = min(maximum.total_seconds(), base.total_seconds() * 2.0 ** max(attempts - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret


async def due_ids(session: AsyncSession, now: datetime, limit: int) -> list[uuid.UUID]:
    """Pending events whose time has come (new, retried, or orphaned by a dead deliverer), oldest due first."""
    statement = (
        select(OutboxEvent.id)
        .where(OutboxEvent.status == OutboxStatus.PENDING, OutboxEvent.next_attempt_at <= now)
        .order_by(OutboxEvent.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite ignores it (one writer at a time anyway)
    )
    return list((await session.scalars(statement)).all())


async def claim(session: AsyncSession, event_id: uuid.UUID, now: datetime, lease: timedelta) -> Claimed | None:
    """Take a due pending event for one attempt, or None (delivered, dead, not due, claimed by another)."""
    statement = (
        update(OutboxEvent)
        .where(
            OutboxEvent.id == event_id,
            OutboxEvent.status == OutboxStatus.PENDING,
            OutboxEvent.next_attempt_at <= now,
        )
        .values(attempts=OutboxEvent.attempts + 1, next_attempt_at=now + lease)
        .returning(OutboxEvent.kind, OutboxEvent.payload, OutboxEvent.attempts, OutboxEvent.created_at)
    )
    row = (await session.execute(statement)).first()
    if row is None:
        return None
    kind, payload, attempts, created_at = row
    return Claimed(event_id, kind, payload, attempts, created_at)


async def mark_delivered(session: AsyncSession, event_id: uuid.UUID, now: datetime) -> bool:
    statement = (
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id, OutboxEvent.status == OutboxStatus.PENDING)
        .values(status=OutboxStatus.DELIVERED, delivered_at=now, last_error=None)
    )
    return await changed_rows(session, statement) == 1


async def mark_failed(
    session: AsyncSession,
    claimed: Claimed,
    error: str,
    now: datetime,
    *,
    max_attempts: int,
    backoff_base: timedelta,
    backoff_max: timedelta,
    permanent: bool = False,
) -> OutboxStatus:
    """Record a failed attempt: pending again after a backoff, or dead when out of attempts (or ``permanent``)."""
    dead = permanent or claimed.attempts >= max_attempts
    values: dict[str, Any] = {"last_error": error[:ERROR_LIMIT]}
    if dead:
        values["status"] = OutboxStatus.DEAD
    else:
        values["next_attempt_at"] = now + backoff(claimed.attempts, backoff_base, backoff_max)
    statement = (
        update(OutboxEvent)
        .where(OutboxEvent.id == claimed.id, OutboxEvent.status == OutboxStatus.PENDING)
        .values(values)
    )
    await session.execute(statement)
    return OutboxStatus.DEAD if dead else OutboxStatus.PENDING


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[OutboxStatus, int]
    retries: int  # attempts beyond each event's first, over every event kept


async def stats(db: Reads) -> Stats:
    beyond_first = case((OutboxEvent.attempts > 1, OutboxEvent.attempts - 1), else_=0)
    statement = select(OutboxEvent.status, func.count(), func.coalesce(func.sum(beyond_first), 0)).group_by(
        OutboxEvent.status
    )
    counts = dict.fromkeys(OutboxStatus, 0)
    retries = 0
    for status, count, extra in (await db.execute(statement)).all():
        counts[OutboxStatus(status)] = count
        retries += int(extra)
    return Stats(counts, retries)


@dataclass(frozen=True, slots=True)
class EventView:
    id: uuid.UUID
    kind: str
    status: OutboxStatus
    attempts: int
    last_error: str | None
    created_at: datetime


_VIEW_COLUMNS = (
    OutboxEvent.id,
    OutboxEvent.kind,
    OutboxEvent.status,
    OutboxEvent.attempts,
    OutboxEvent.last_error,
    OutboxEvent.created_at,
)


def _view(row: Any) -> EventView:
    event_id, kind, status, attempts, last_error, created_at = row
    return EventView(event_id, kind, OutboxStatus(status), attempts, last_error, created_at)


async def dead_letters(db: Reads, limit: int, offset: int) -> list[EventView]:
    statement = (
        select(*_VIEW_COLUMNS)
        .where(OutboxEvent.status == OutboxStatus.DEAD)
        .order_by(OutboxEvent.created_at.desc(), OutboxEvent.id)
        .limit(limit)
        .offset(offset)
    )
    return [_view(row) for row in (await db.execute(statement)).all()]


async def get(db: Reads, event_id: uuid.UUID) -> EventView | None:
    row = (await db.execute(select(*_VIEW_COLUMNS).where(OutboxEvent.id == event_id))).first()
    return _view(row) if row is not None else None


async def retry(session: AsyncSession, event_id: uuid.UUID) -> bool:
    """Give a dead event a fresh set of attempts, due now, delivered after the commit; False if it is not dead."""
    statement = (
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id, OutboxEvent.status == OutboxStatus.DEAD)
        .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=utcnow())
    )
    if await changed_rows(session, statement) != 1:
        return False
    notify_after_commit(session, event_id)
    return True
