"""One delivery at a time against the real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL: the row
is written in the caller's transaction, delivered once, settled; a refusing server means retries with backoff and
then a dead letter; a malformed event is dead at once."""

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db import utcnow
from service.outbox import service as outbox_service
from service.outbox.delivery import Delivery, build_handlers
from service.outbox.models import OutboxEvent, OutboxStatus
from tests.mail_server import SMTPServer
from tests.outbox.support import TEMPLATES, email_payload, event_row, mail_settings


def _delivery(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, smtp: SMTPServer, **overrides: object
) -> Delivery:
    settings = mail_settings(database_url, smtp, **overrides)
    return Delivery(sessionmaker, settings, build_handlers(settings, templates=TEMPLATES))


async def _emit(sessionmaker: async_sessionmaker[AsyncSession], **payload: str) -> OutboxEvent:
    async with sessionmaker() as session, session.begin():
        return await outbox_service.emit(session, "email", email_payload(**payload))


async def test_the_row_exists_only_if_the_action_commits(session: AsyncSession) -> None:
    async with session.begin():
        kept = (await outbox_service.emit(session, "email", email_payload())).id
    async with session.begin():
        await outbox_service.emit(session, "email", email_payload(to="gone@example.com"))
        await session.rollback()  # the action fails
    rows = (await session.execute(select(OutboxEvent.id, OutboxEvent.status, OutboxEvent.attempts))).all()
    assert rows == [(kept, OutboxStatus.PENDING, 0)]


async def test_an_event_is_delivered_once_and_settled(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession, database_url: str, smtp_server: SMTPServer
) -> None:
    delivery = _delivery(sessionmaker, database_url, smtp_server)
    event = await _emit(sessionmaker, to="jake@example.com", name="Jake <3", link="https://x.test/v?t=a&b")

    assert await delivery.deliver(event.id) == "delivered"
    assert await delivery.deliver(event.id) == "skipped"  # idempotent by id: settled events are never sent again

    (message,) = await smtp_server.wait_for(1)
    assert message["To"] == "jake@example.com"
    assert message["From"] == "Conduit <no-reply@conduit.test>"
    assert message["Subject"] == "Hello Jake <3, welcome to Conduit"
    assert message["Message-ID"] == f"<{event.id}@conduit.test>"
    assert message.get_content_type() == "multipart/alternative"
    assert "Follow https://x.test/v?t=a&b to confirm." in smtp_server.text(message)
    assert '<a href="https://x.test/v?t=a&amp;b">' in smtp_server.html(message)  # values escaped in HTML only
    assert "Jake &lt;3" in smtp_server.html(message)
    assert smtp_server.envelopes == [("no-reply@conduit.test", ["jake@example.com"])]

    row = await event_row(session, event.id)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.DELIVERED, 1, None)
    assert row.delivered_at is not None


async def test_a_refusing_server_means_retries_with_backoff_then_a_dead_letter(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession, database_url: str, smtp_server: SMTPServer
) -> None:
    delivery = _delivery(
        sessionmaker, database_url, smtp_server, outbox_max_attempts=3, outbox_backoff_base=60, outbox_backoff_max=600
    )
    smtp_server.refuse = "451 4.3.0 mailbox busy, try later"
    event = await _emit(sessionmaker)

    before = utcnow()
    assert await delivery.deliver(event.id) == "retry"
    row = await event_row(session, event.id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.last_error is not None
    assert "451" in row.last_error
    assert "mailbox busy" in row.last_error
    # The first wait is the base, jittered into its upper half: 30-60 s from now.
    assert before + timedelta(seconds=30) <= row.next_attempt_at <= utcnow() + timedelta(seconds=60)
    assert await delivery.deliver(event.id) == "skipped"  # not due yet

    async def make_due() -> None:
        async with sessionmaker() as writer, writer.begin():
            await writer.execute(update(OutboxEvent).values(next_attempt_at=utcnow() - timedelta(seconds=1)))

    await make_due()
    assert await delivery.deliver(event.id) == "retry"
    row = await event_row(session, event.id)
    assert row.attempts == 2
    assert utcnow() + timedelta(seconds=55) <= row.next_attempt_at  # the second wait: 60-120 s
    await make_due()
    assert await delivery.deliver(event.id) == "dead"
    await make_due()
    assert await delivery.deliver(event.id) == "skipped"  # dead letters wait for an admin

    row = await event_row(session, event.id)
    assert (row.status, row.attempts) == (OutboxStatus.DEAD, 3)
    assert smtp_server.refused == 3
    assert smtp_server.messages == []


async def test_an_event_that_cannot_be_rendered_is_dead_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession, database_url: str, smtp_server: SMTPServer
) -> None:
    delivery = _delivery(sessionmaker, database_url, smtp_server)
    async with sessionmaker() as writer, writer.begin():
        unknown = await outbox_service.emit(writer, "email", {**email_payload(), "template": "no_such_template"})
        missing = await outbox_service.emit(writer, "email", {**email_payload(), "context": {"name": "Jake"}})
        bad_path = await outbox_service.emit(writer, "email", {**email_payload(), "template": "../../etc/passwd"})
        no_kind = await outbox_service.emit(writer, "webhook", {"url": "https://x.test"})

    assert await delivery.deliver_due() == ["dead", "dead", "dead", "dead"]
    errors = {}
    for event in (unknown, missing, bad_path, no_kind):
        row = await event_row(session, event.id)
        assert (row.status, row.attempts) == (OutboxStatus.DEAD, 1)
        errors[event.id] = row.last_error or ""
    assert "no template no_such_template.subject.txt" in errors[unknown.id]
    assert "needs a value for 'link'" in errors[missing.id]
    assert "invalid template name" in errors[bad_path.id]
    assert "no handler for kind 'webhook'" in errors[no_kind.id]
    assert smtp_server.messages == []


async def test_a_claimed_event_is_not_claimed_again_until_its_lease_ends(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    async with sessionmaker() as writer, writer.begin():
        event = await outbox_service.emit(writer, "email", email_payload())
    now = utcnow()
    async with sessionmaker() as writer, writer.begin():
        first = await outbox_service.claim(writer, event.id, now, timedelta(seconds=60))
        second = await outbox_service.claim(writer, event.id, now, timedelta(seconds=60))
        later = await outbox_service.claim(writer, event.id, now + timedelta(seconds=61), timedelta(seconds=60))
    assert first is not None
    assert first.attempts == 1
    assert second is None  # a second deliverer, at the same moment, gets nothing
    assert later is not None  # the first one died: after its lease the event is due again
    assert later.attempts == 2
    count = await session.scalar(select(func.count()).select_from(OutboxEvent))
    assert count == 1


def test_backoff_doubles_is_capped_and_jittered_into_its_upper_half() -> None:
    base, cap = timedelta(seconds=10), timedelta(seconds=100)
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (30, 100)):
        waits = [outbox_service.backoff(attempts, base, cap).total_seconds() for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (attempts, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered
