"""The real worker (``service worker`` in a subprocess) on PostgreSQL and Redis, with the real SMTP server.

The crash test (issue 16, item 4): the SMTP peer holds a DATA until released, so the worker is inside a send at a
known moment; it is SIGKILLed there and started again. Every message must arrive; the one killed mid-send may
arrive twice (the server had the whole message before the kill), with the same Message-ID; every row ends
delivered. Each test uses a saq queue name of its own and deletes its Redis keys afterwards.
"""

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from service.core.db import build_sessionmaker, create_engine_for
from service.main import State, create_app
from service.outbox import service as outbox_service
from service.outbox.models import OutboxEvent, OutboxStatus
from tests.conftest import IN_CI
from tests.mail_server import SMTPServer
from tests.outbox.support import mail_settings, scratch_database

REDIS_URL = os.environ.get("SERVICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SERVICE = Path(sys.executable).parent / "service"
LEASE = 4  # seconds: how long a killed worker's event stays claimed


def _verify_payload(n: int) -> dict[str, Any]:
    return {
        "to": f"user{n}@example.com",
        "template": "verify_email",
        "context": {"username": f"user{n}", "link": f"https://app.test/verify?token=t{n}", "valid_for": "48 hours"},
    }


@pytest.fixture
async def queue_name() -> AsyncIterator[str]:
    """A saq queue of this test's own; its keys (saq:<name>:*) are deleted afterwards."""
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.ping()
    except OSError as exc:
        await redis.aclose()
        if IN_CI:
            raise
        pytest.skip(f"Redis unreachable at {REDIS_URL} ({type(exc).__name__})")
    name = f"conduit-test-{uuid.uuid4().hex[:10]}"
    yield name
    keys = [key async for key in redis.scan_iter(match=f"saq:{name}*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database("postgresql", tmp_path) as url:
        yield url


class Workers:
    """``service worker`` subprocesses, stopped (SIGKILL if need be) at the end of the test."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.cwd / f"worker{len(self.started)}.log").open("wb")
        process = subprocess.Popen(  # noqa: S603 - our own command, fixed arguments
            [str(SERVICE), "worker", *args], env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        self.started.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.cwd.glob("worker*.log")))

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def workers(postgres_url: str, queue_name: str, smtp_server: SMTPServer, tmp_path: Path) -> Iterator[Workers]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SERVICE_")},
        "SERVICE_ENVIRONMENT": "test",
        "SERVICE_DATABASE_URL": postgres_url,
        "SERVICE_REDIS_URL": REDIS_URL,
        "SERVICE_OUTBOX_QUEUE": queue_name,
        "SERVICE_OUTBOX_LEASE": str(LEASE),
        "SERVICE_OUTBOX_POLL_INTERVAL": "1",
        "SERVICE_MAIL_BACKEND": "smtp",
        "SERVICE_MAIL_FROM": "Conduit <no-reply@conduit.test>",
        "SERVICE_SMTP_HOST": smtp_server.host,
        "SERVICE_SMTP_PORT": str(smtp_server.port),
        "SERVICE_SMTP_TLS": "none",
        "SERVICE_SMTP_TIMEOUT": "30",
        "SERVICE_LOG_FORMAT": "json",
    }
    started = Workers(env, tmp_path)
    yield started
    started.close()


async def _emit(url: str, count: int) -> list[uuid.UUID]:
    engine = create_engine_for(url)
    try:
        async with build_sessionmaker(engine)() as session, session.begin():
            return [(await outbox_service.emit(session, "email", _verify_payload(n))).id for n in range(count)]
    finally:
        await engine.dispose()


async def _statuses(url: str) -> dict[uuid.UUID, tuple[OutboxStatus, int]]:
    engine = create_engine_for(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(OutboxEvent.id, OutboxEvent.status, OutboxEvent.attempts))).all()
    finally:
        await engine.dispose()
    return {event_id: (OutboxStatus(status), attempts) for event_id, status, attempts in rows}


async def _until_delivered(
    url: str,
    workers: Workers,
    timeout: float,  # noqa: ASYNC109 - a test's bound, in seconds
) -> dict[uuid.UUID, tuple[OutboxStatus, int]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        statuses = await _statuses(url)
        if all(status is OutboxStatus.DELIVERED for status, _ in statuses.values()):
            return statuses
        if loop.time() > deadline:
            raise AssertionError(f"not all delivered within {timeout} s: {statuses}\n{workers.logs()}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "server_kept_it",
    [False, True],
    ids=["killed-before-the-server-kept-it", "killed-after-the-server-kept-it-before-its-reply"],
)
async def test_a_worker_killed_mid_send_loses_nothing(
    postgres_url: str, smtp_server: SMTPServer, workers: Workers, server_kept_it: bool
) -> None:
    ids = await _emit(postgres_url, 3)
    smtp_server.hold(keep_first=server_kept_it)  # the first DATA blocks: the worker is then inside the send
    first = workers.start("--concurrency", "1")
    entered = await asyncio.to_thread(smtp_server.entered.wait, 30)
    assert entered, f"the worker never reached DATA\n{workers.logs()}"

    first.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
    smtp_server.release()
    statuses = await _statuses(postgres_url)
    assert sorted(status for status, _ in statuses.values()) == [OutboxStatus.PENDING] * 3  # none acknowledged

    second = workers.start()
    statuses = await _until_delivered(postgres_url, workers, timeout=LEASE * 10)
    messages = await smtp_server.wait_for(4 if server_kept_it else 3)

    received = Counter(str(message["Message-ID"]) for message in messages)
    assert set(received) == {f"<{event_id}@conduit.test>" for event_id in ids}  # all arrived, nothing else did
    # The event the worker was killed in: claimed twice (the lease ran out, the second worker took it), all
    # others once.
    (killed,) = [event_id for event_id in ids if statuses[event_id][1] == 2]
    assert sorted(attempts for _, attempts in statuses.values()) == [1, 1, 2]
    # A duplicate only after a kill between the server keeping the message and the worker hearing so: then it is
    # the same message twice, same Message-ID.
    expected = {f"<{event_id}@conduit.test>": 1 for event_id in ids}
    if server_kept_it:
        expected[f"<{killed}@conduit.test>"] = 2
    assert dict(received) == expected
    by_id: dict[str, list[Any]] = {}
    for message in messages:
        by_id.setdefault(str(message["Message-ID"]), []).append(message)
    for copies in by_id.values():
        assert len({(copy["Subject"], copy["Date"], smtp_server.text(copy)) for copy in copies}) == 1

    second.send_signal(signal.SIGTERM)  # a clean stop: saq lets the jobs in progress finish
    assert await asyncio.to_thread(second.wait, 30) == 0, workers.logs()


async def test_the_app_enqueues_after_commit_and_the_worker_delivers(
    postgres_url: str, queue_name: str, smtp_server: SMTPServer, workers: Workers
) -> None:
    # A sweep only at start (then hourly): what arrives later came through the queue the app wrote to.
    workers.env["SERVICE_OUTBOX_POLL_INTERVAL"] = "3600"
    workers.start()
    await asyncio.sleep(0)
    settings = mail_settings(postgres_url, smtp_server, redis_url=REDIS_URL, outbox_queue=queue_name)
    app = create_app(settings)
    async with app.router.lifespan_context(app) as lifespan:
        state = cast(State, lifespan)
        async with state["database"].writer() as session, session.begin():
            event = await outbox_service.emit(session, "email", _verify_payload(7))
        (message,) = await smtp_server.wait_for(1, timeout=30)
    assert message["Message-ID"] == f"<{event.id}@conduit.test>"
    assert message["To"] == "user7@example.com"
    assert "https://app.test/verify?token=t7" in smtp_server.text(message)
    statuses = await _until_delivered(postgres_url, workers, timeout=30)
    assert statuses == {event.id: (OutboxStatus.DELIVERED, 1)}


def test_the_worker_command_needs_redis(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVICE_")}
    env |= {"SERVICE_ENVIRONMENT": "test", "SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/w.db"}
    done = subprocess.run(  # noqa: S603 - our own command, fixed arguments
        [str(SERVICE), "worker"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "service worker needs SERVICE_REDIS_URL" in done.stderr
