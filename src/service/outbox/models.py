import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Enum, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, utcnow


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # out of attempts: a dead letter, until an admin retries it


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class OutboxEvent(Base):
    """One event that must leave the service (an e-mail now, webhooks later), delivered at least once.

    The row is added in the transaction of the action that causes it, so it exists if and only if that action
    committed. ``id`` is the idempotency key: a handler given the same id twice does the same thing (a mail carries
    the same Message-ID). A deliverer claims a due row by moving ``next_attempt_at`` a lease ahead and counting the
    attempt in one conditional UPDATE, so two deliverers never hold the same event and a deliverer that dies
    mid-way leaves the row due again once the lease has passed (outbox/service.py).
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))  # which handler delivers it: "email"
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(OutboxStatus, name="outbox_status", values_callable=_values, validate_strings=True),
        default=OutboxStatus.PENDING,
    )
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far, the one in progress included
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)  # the exception's type and message: never a payload
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
