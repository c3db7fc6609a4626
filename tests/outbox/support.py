"""Helpers for the outbox tests: the test template, settings that mail through a test SMTP server, scratch
databases that really commit (the app's lifespan and the worker open their own connections)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.config import Settings, load_settings
from service.outbox.models import OutboxEvent
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.mail_server import SMTPServer

TEMPLATES = Path(__file__).resolve().parents[1] / "mail" / "templates"  # outbox_test.*: a template of the tests'


def email_payload(
    to: str = "jake@example.com", name: str = "Jake", link: str = "https://x.test/v?t=1"
) -> dict[str, Any]:
    return {"to": to, "template": "outbox_test", "context": {"name": name, "link": link}}


def mail_settings(database_url: str, smtp: SMTPServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "mail_from": "Conduit <no-reply@conduit.test>",
        "smtp_timeout": 5,
        **smtp.settings(),
        **overrides,
    }
    return load_settings(**values)


async def event_row(session: AsyncSession, event_id: Any) -> OutboxEvent:
    session.expire_all()
    row = (await session.execute(select(OutboxEvent).where(OutboxEvent.id == event_id))).scalar_one()
    return row


@asynccontextmanager
async def scratch_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """An empty database of the test's own, migrated to head: a SQLite file, or a PostgreSQL database dropped
    afterwards."""
    import asyncio

    from service.core import migrations

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{directory / 'outbox.db'}"
        await asyncio.to_thread(migrations.upgrade, url)
        yield url
        return
    name, url = await create_postgres_database("conduit_outbox")
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        yield url
    finally:
        await drop_postgres_database(name)


async def settled(session: AsyncSession, event_id: Any, timeout: float = 10.0) -> OutboxEvent:  # noqa: ASYNC109
    """The row once it is no longer pending (the message may reach the server just before the row is settled)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (row := await event_row(session, event_id)).status == "pending":
        if loop.time() > deadline:
            raise AssertionError(f"event {event_id} still pending after {timeout} s")
        await session.rollback()  # a new snapshot next time
        await asyncio.sleep(0.02)
    return row
