from datetime import datetime

from sqlalchemy import Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, utcnow


class AuditEntry(Base):
    """One moderator or admin action, written in the transaction of the action itself: a committed action always
    has its entry, a failed one never does. Entries outlive what they name, so nothing here is a foreign key:
    ``actor`` and ``target`` keep the names as they were at the time (README, "Roles and permissions")."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created_at_id", "created_at", "id"),  # newest first, creation-order tie-break
        {"sqlite_autoincrement": True},  # ids never reused, so they order entries by creation
    )

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(BigId)  # None: the command line; no FK, the actor may be deleted
    actor: Mapped[str] = mapped_column(String(50))  # the actor's username then, or "system" (the command line)
    action: Mapped[str] = mapped_column(String(64))  # e.g. "user.role.moderator", "article.delete"
    target: Mapped[str] = mapped_column(String(320))  # e.g. "user:jake", "article:<slug>", "comment:<id>"
    request_id: Mapped[str | None] = mapped_column(String(128))  # X-Request-ID of the request; None from the CLI
