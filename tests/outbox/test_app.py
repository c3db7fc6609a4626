"""The outbox inside the app, with no Redis: the lifespan delivers rows left pending by an earlier process and,
right after each commit, the events it wrote; /metrics and the admin API show the outbox."""

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.db import build_sessionmaker, create_engine_for, utcnow
from service.main import State, create_app
from service.outbox import service as outbox_service
from service.outbox.models import OutboxEvent, OutboxStatus
from service.users.models import Role
from tests.admin.support import make_user
from tests.conftest import BACKENDS
from tests.helpers import ISO_TIMESTAMP, auth, register, serving
from tests.mail_server import SMTPServer
from tests.outbox.support import event_row, mail_settings, scratch_database, settled


def _verify(to: str) -> dict[str, Any]:
    return {
        "to": to,
        "template": "verify_email",
        "context": {"username": "jake", "link": "https://app.test/verify?token=abc", "valid_for": "48 hours"},
    }


@pytest.mark.parametrize("backend", BACKENDS)
async def test_in_process_delivery_at_start_and_after_commit(
    backend: str, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    async with scratch_database(backend, tmp_path) as url:
        engine = create_engine_for(url)
        try:
            # An earlier process committed this and died before delivering it (no dispatcher: nothing was sent).
            async with build_sessionmaker(engine)() as session, session.begin():
                left = (await outbox_service.emit(session, "email", _verify("left@example.com"))).id
        finally:
            await engine.dispose()
        assert smtp_server.messages == []

        # A poll interval far longer than the test: only the start-up sweep and the after-commit path deliver.
        app = create_app(mail_settings(url, smtp_server, outbox_poll_interval=3600))
        async with app.router.lifespan_context(app) as lifespan:
            state = cast(State, lifespan)
            (first,) = await smtp_server.wait_for(1)
            assert first["Message-ID"] == f"<{left}@conduit.test>"

            async with state["database"].writer() as session, session.begin():
                fresh = (await outbox_service.emit(session, "email", _verify("fresh@example.com"))).id
            messages = await smtp_server.wait_for(2)
            assert messages[1]["Message-ID"] == f"<{fresh}@conduit.test>"
            assert messages[1]["To"] == "fresh@example.com"

            async with state["database"].writer() as session:
                for event_id in (left, fresh):
                    row = await settled(session, event_id)
                    assert (row.status, row.attempts) == (OutboxStatus.DELIVERED, 1)

            async with AsyncClient(
                transport=ASGITransport(app=serving(app, state["database"])), base_url="http://t"
            ) as c:
                await app.state.outbox.refresh()
                text = (await c.get("/metrics")).text
            assert 'outbox_events{status="delivered"} 2.0' in text
            assert 'outbox_events{status="pending"} 0.0' in text
            assert "outbox_retries_total 0.0" in text


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_rolled_back_action_sends_nothing(backend: str, tmp_path: Path, smtp_server: SMTPServer) -> None:
    async with scratch_database(backend, tmp_path) as url:
        app = create_app(mail_settings(url, smtp_server, outbox_poll_interval=3600))
        async with app.router.lifespan_context(app) as lifespan:
            state = cast(State, lifespan)
            async with state["database"].writer() as session:
                async with session.begin():
                    await outbox_service.emit(session, "email", _verify("never@example.com"))
                    await session.rollback()
                async with session.begin():
                    kept = (await outbox_service.emit(session, "email", _verify("kept@example.com"))).id
            (message,) = await smtp_server.wait_for(1)
            assert message["Message-ID"] == f"<{kept}@conduit.test>"
            async with state["database"].writer() as session:
                await settled(session, kept)
                stats = await outbox_service.stats(session)
        assert stats.counts == {OutboxStatus.PENDING: 0, OutboxStatus.DELIVERED: 1, OutboxStatus.DEAD: 0}


async def _dead_event(session: AsyncSession, to: str, error: str) -> str:
    event = await outbox_service.emit(session, "email", _verify(to))
    await session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event.id)
        .values(status=OutboxStatus.DEAD, attempts=8, last_error=error)
    )
    await session.commit()
    return str(event.id)


async def test_admin_api_lists_dead_letters_and_retries_them(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    before = (await client.get("/admin/outbox", headers=auth(admin["token"]))).json()["counts"]  # registration mails
    older = await _dead_event(session, "a@example.com", "SMTPDataError: (451, 'mailbox busy')")
    newer = await _dead_event(session, "b@example.com", "SMTPRecipientsRefused")
    await outbox_service.emit(session, "email", _verify("c@example.com"))
    await session.commit()

    response = await client.get("/admin/outbox", headers=auth(admin["token"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counts"] == {"pending": before["pending"] + 1, "delivered": 0, "dead": 2}
    assert body["retries"] == 14  # 7 beyond the first, twice
    assert body["deadLettersCount"] == 2
    assert [letter["id"] for letter in body["deadLetters"]] == [newer, older]  # newest first
    letter = body["deadLetters"][1]
    assert letter["kind"] == "email"
    assert letter["attempts"] == 8
    assert letter["lastError"] == "SMTPDataError: (451, 'mailbox busy')"
    assert ISO_TIMESTAMP.match(letter["createdAt"])
    paged = await client.get("/admin/outbox", params={"limit": 1, "offset": 1}, headers=auth(admin["token"]))
    assert [letter["id"] for letter in paged.json()["deadLetters"]] == [older]
    for offset in (2, 2**70):  # past the end, even past BIGINT: an empty page, never a 500
        past = await client.get("/admin/outbox", params={"offset": offset}, headers=auth(admin["token"]))
        assert past.status_code == 200
        assert past.json()["deadLetters"] == []
        assert past.json()["deadLettersCount"] == 2

    response = await client.post(f"/admin/outbox/{older}/retry", headers=auth(admin["token"]))
    assert response.status_code == 200, response.text
    assert response.json()["event"]["status"] == "pending"
    assert response.json()["event"]["attempts"] == 0
    row = await event_row(session, uuid.UUID(older))
    assert row.status is OutboxStatus.PENDING
    assert row.next_attempt_at <= utcnow() + timedelta(seconds=1)

    again = await client.post(f"/admin/outbox/{older}/retry", headers=auth(admin["token"]))
    assert (again.status_code, again.json()) == (409, {"errors": {"event": ["is not dead"]}})
    for unknown in ("00000000-0000-0000-0000-000000000001", "not-a-uuid", "1" * 400):
        missing = await client.post(f"/admin/outbox/{unknown}/retry", headers=auth(admin["token"]))
        assert (missing.status_code, missing.json()) == (404, {"errors": {"event": ["not found"]}})


async def test_admin_outbox_is_for_admins_only(client: AsyncClient, session: AsyncSession) -> None:
    moderator = await make_user(client, session, Role.MODERATOR)
    user = await register(client)
    for caller in (moderator, user):
        for method, path in (("GET", "/admin/outbox"), ("POST", f"/admin/outbox/{'0' * 32}/retry")):
            response = await client.request(method, path, headers=auth(caller["token"]))
            assert (response.status_code, response.json()) == (403, {"errors": {"role": ["forbidden"]}})
    anonymous = await client.get("/admin/outbox")
    assert anonymous.status_code == 401
