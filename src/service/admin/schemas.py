from typing import Annotated

from pydantic import BeforeValidator
from pydantic.json_schema import SkipJsonSchema

from service.core.schemas import CamelModel, PartialUpdate, RequestModel, Timestamp, reject_blank
from service.users.models import Role, UserStatus


class AdminUserUpdate(PartialUpdate):
    """``role`` and/or ``status``; at least one. ``null`` or ``""`` is ``can't be blank``, an unknown value
    ``is invalid``."""

    role: Annotated[Role | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    status: Annotated[UserStatus | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None


class AdminUserUpdateEnvelope(RequestModel):
    user: AdminUserUpdate


class AdminUserRead(CamelModel):
    username: str
    email: str
    role: Role
    status: UserStatus
    created_at: Timestamp


class AdminUserEnvelope(CamelModel):
    user: AdminUserRead


class AdminUserList(CamelModel):
    users: list[AdminUserRead]
    users_count: int


class AuditEntryRead(CamelModel):
    id: int
    actor: str
    action: str
    target: str
    created_at: Timestamp
    request_id: str | None  # null for the command line


class AuditLog(CamelModel):
    entries: list[AuditEntryRead]
    entries_count: int


class OutboxEventRead(CamelModel):
    id: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    created_at: Timestamp


class OutboxEventEnvelope(CamelModel):
    event: OutboxEventRead


class OutboxOverview(CamelModel):
    """Events by status (pending: the queue depth) and the dead letters, newest first."""

    counts: dict[str, int]
    retries: int
    dead_letters: list[OutboxEventRead]
    dead_letters_count: int
