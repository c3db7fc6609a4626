"""``/api/admin`` (contract B4): admins only; anyone else signed in gets 403 ``role`` ``forbidden``."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BeforeValidator

from service.admin import service as admin_service
from service.admin.schemas import (
    AdminUserEnvelope,
    AdminUserList,
    AdminUserRead,
    AdminUserUpdateEnvelope,
    AuditEntryRead,
    AuditLog,
    OutboxEventEnvelope,
    OutboxEventRead,
    OutboxOverview,
)
from service.admin.service import UserView
from service.audit import service as audit_service
from service.core.db import ReadDep, SessionDep
from service.core.errors import Conflict, NotFound, error_responses
from service.core.paging import Limit, Offset
from service.core.schemas import empty_to_none, timestamp
from service.outbox import service as outbox_service
from service.outbox.models import OutboxStatus
from service.outbox.service import EventView
from service.users.models import Role, UserStatus
from service.users.permissions import Action, require
from service.users.service import AuthUser

router = APIRouter(prefix="/api/admin", tags=["admin"])

# Built once each (FastAPI caches a dependency per callable): the caller, if the role table allows the action.
UserLister = Annotated[AuthUser, Depends(require(Action.LIST_USERS))]
UserEditor = Annotated[AuthUser, Depends(require(Action.CHANGE_ROLE, Action.CHANGE_STATUS))]  # each field: its own
UserRemover = Annotated[AuthUser, Depends(require(Action.DELETE_USER))]
AuditReader = Annotated[AuthUser, Depends(require(Action.READ_AUDIT_LOG))]
OutboxOperator = Annotated[AuthUser, Depends(require(Action.MANAGE_OUTBOX))]

# The same paging rules as the article list (B2).


def to_read(user: UserView) -> AdminUserRead:
    return AdminUserRead(
        username=user.username,
        email=user.email,
        role=user.role,
        status=user.status,
        created_at=timestamp(user.created_at),
    )


@router.get("/users", summary="List and search users (admin)", responses=error_responses(401, 403, 422))
async def list_users(
    db: ReadDep,
    admin: UserLister,
    search: Annotated[str | None, Query(description="A fragment of the username or e-mail (any case).")] = None,
    role: Annotated[Role | None, BeforeValidator(empty_to_none), Query(description="Only this role.")] = None,
    user_status: Annotated[
        UserStatus | None, BeforeValidator(empty_to_none), Query(alias="status", description="Only this status.")
    ] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> AdminUserList:
    users, total = await admin_service.list_users(
        db, search=search, role=role, status=user_status, limit=limit, offset=offset
    )
    return AdminUserList(users=[to_read(user) for user in users], users_count=total)


@router.put(
    "/users/{username}",
    summary="Change a user's role or status (admin)",
    responses=error_responses(401, 403, 404, 409, 422),
)
async def update_user(
    username: str, body: AdminUserUpdateEnvelope, admin: UserEditor, session: SessionDep
) -> AdminUserEnvelope:
    user = await admin_service.change_user(session, admin, username, role=body.user.role, status=body.user.status)
    return AdminUserEnvelope(user=to_read(user))


@router.delete(
    "/users/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user and everything they wrote (admin)",
    responses=error_responses(401, 403, 404, 409),
)
async def delete_user(username: str, admin: UserRemover, session: SessionDep) -> Response:
    await admin_service.delete_user(session, admin, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit-log", summary="The audit log, newest first (admin)", responses=error_responses(401, 403, 422))
async def audit_log(db: ReadDep, admin: AuditReader, limit: Limit = 20, offset: Offset = 0) -> AuditLog:
    entries, total = await audit_service.list_entries(db, limit=limit, offset=offset)
    return AuditLog(
        entries=[
            AuditEntryRead(
                id=entry.id,
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                created_at=timestamp(entry.created_at),
                request_id=entry.request_id,
            )
            for entry in entries
        ],
        entries_count=total,
    )


def _event_read(event: EventView) -> OutboxEventRead:
    return OutboxEventRead(
        id=str(event.id),
        kind=event.kind,
        status=event.status.value,
        attempts=event.attempts,
        last_error=event.last_error,
        created_at=timestamp(event.created_at),
    )


@router.get(
    "/outbox", summary="Outbox events by status, and the dead letters (admin)", responses=error_responses(401, 403, 422)
)
async def outbox(db: ReadDep, admin: OutboxOperator, limit: Limit = 20, offset: Offset = 0) -> OutboxOverview:
    stats = await outbox_service.stats(db)
    total = stats.counts[OutboxStatus.DEAD]
    # Past the end, no query: an offset beyond BIGINT (B2 sets no maximum) would not even bind (found by fuzzing).
    dead = await outbox_service.dead_letters(db, limit=limit, offset=offset) if offset < total else []
    return OutboxOverview(
        counts={status.value: count for status, count in stats.counts.items()},
        retries=stats.retries,
        dead_letters=[_event_read(event) for event in dead],
        dead_letters_count=total,
    )


@router.post(
    "/outbox/{event_id}/retry",
    summary="Deliver a dead event again, with a fresh set of attempts (admin)",
    responses=error_responses(401, 403, 404, 409),
)
async def retry_outbox_event(event_id: str, admin: OutboxOperator, session: SessionDep) -> OutboxEventEnvelope:
    try:
        key = uuid.UUID(event_id)
    except ValueError:
        raise NotFound("event", "not found") from None
    retried = await outbox_service.retry(session, key)
    event = await outbox_service.get(session, key)
    if event is None:
        raise NotFound("event", "not found")
    if not retried:
        raise Conflict("event", "is not dead")
    return OutboxEventEnvelope(event=_event_read(event))
