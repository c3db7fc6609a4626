"""The audit log: what moderators and admins did (contract B4). All SQL for it lives here.

``record`` adds the entry to the caller's session, so it is written by the action's own commit and rolled back with
it: there is no committed action without its entry and no entry of an action that failed.

Vocabulary (``action`` / ``target``), documented in the README:

- ``user.role.<role>`` / ``user:<username>``: the user's role became ``<role>``
- ``user.status.<status>`` / ``user:<username>``: the account became ``active`` or ``suspended``
- ``user.delete`` / ``user:<username>``: the account and its content were deleted
- ``article.delete`` / ``article:<slug>``: someone other than its author deleted the article
- ``comment.delete`` / ``comment:<id>``: someone other than its author deleted the comment
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.audit.models import AuditEntry
from service.core.db import Reads
from service.core.logging import request_id_var

_audit: Table = AuditEntry.__table__  # type: ignore[assignment]  # a declarative class's table is a Table


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a signed-in user, or ``SYSTEM`` (the command line)."""

    id: int | None
    username: str

    @classmethod
    def of(cls, user: "HasName") -> "Actor":
        return cls(user.id, user.username)


class HasName(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def username(self) -> str: ...


SYSTEM = Actor(None, "system")


def user_target(username: str) -> str:
    return f"user:{username}"


def record(session: AsyncSession, actor: Actor, action: str, target: str) -> None:
    """Add an entry to the current transaction (written at its commit, or never)."""
    session.add(
        AuditEntry(
            actor_id=actor.id, actor=actor.username, action=action, target=target, request_id=request_id_var.get()
        )
    )


@dataclass(frozen=True, slots=True)
class EntryView:
    id: int
    actor: str
    action: str
    target: str
    created_at: datetime
    request_id: str | None


_PAGE = (
    select(
        _audit.c.id, _audit.c.actor, _audit.c.action, _audit.c.target, _audit.c.created_at, _audit.c.request_id
    ).order_by(_audit.c.created_at.desc(), _audit.c.id.desc())  # ix_audit_log_created_at_id, walked backwards
)
_TOTAL = select(func.count()).select_from(_audit)


async def list_entries(db: Reads, *, limit: int, offset: int) -> tuple[list[EntryView], int]:
    """Newest first, and the exact number of entries: two statements (one when the page is past the end)."""
    total = int((await db.execute(_TOTAL)).scalar_one())
    if total <= offset:
        return [], total
    rows: Any = (await db.execute(_PAGE.limit(limit).offset(offset))).all()
    return [EntryView(*row) for row in rows], total
