"""SIGTERM under load drains ``service serve`` (core/server.py), one worker and two: the real command, as a subprocess
on a free port, against a PostgreSQL database of the test's own.

The slow requests are real writers (``POST /api/articles``) waiting on a lock the test holds on ``articles``; they are
still in flight when the listener closes, and the lock is let go only then. The fast load opens a new connection
for every request, as a client reaching the service through a load balancer would, and stops sending partway
through the delay, as that load balancer would once readiness says 503.

What must hold (issue 14): readiness turns 503 at once while every other request still gets 200; after the delay new
connections are refused (``ConnectError``, not accepted and reset); every request that was accepted gets its full
2xx response, the slow writers included; the lifespan shutdown runs in each worker; the process exits 0 within
delay + timeout + a margin; the log carries no error and no traceback.
"""

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from service.core import migrations
from tests.conftest import BACKENDS, create_postgres_database, drop_postgres_database
from tests.helpers import article_payload, auth

pytestmark = pytest.mark.xdist_group("shutdown")

DELAY = 2.0  # SERVICE_SHUTDOWN_DELAY
TIMEOUT = 5.0  # SERVICE_SHUTDOWN_TIMEOUT
MARGIN = 5.0  # past delay + timeout: the lifespan shutdown, the parent's join, a busy machine
STARTUP_LIMIT = 60.0  # spawning workers that import the app is slow on a shared 2-core machine
SLOW_WRITERS = 3
FAST_CLIENTS = 4
FAST_PATHS = ("/api/articles", "/api/tags", "/api/user")
# Every request a new connection (through a load balancer, each would be): the listener is exercised throughout.
NEW_CONNECTION = {"Connection": "close"}
# Sessions waiting on a lock; in a transaction pg_stat_activity is a snapshot, hence the clearing.
WAITING = (
    "SELECT count(*) FROM pg_stat_activity, pg_stat_clear_snapshot()"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@dataclass
class Outcome:
    started: float
    ended: float
    path: str
    result: str  # "200", "201", "503"... or the exception's class name
    body: dict[str, object] | None = None
    retry_after: str | None = None

    @property
    def draining(self) -> bool:
        """A readiness answer that gives the drain as its reason (the database check may fail on a busy machine)."""
        checks = (self.body or {}).get("checks")
        return isinstance(checks, dict) and checks.get("shutdown") == "draining"


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    if "postgresql" not in BACKENDS:
        pytest.skip("PostgreSQL is not among SERVICE_TEST_DATABASES")
    name, url = await create_postgres_database("conduit_shutdown")
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        yield url
    finally:
        await drop_postgres_database(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _wait_for_log(log: Path, text: str, count: int, limit: float, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + limit
    while (logged := log.read_text()).count(text) < count:  # noqa: ASYNC240 - a small local file
        assert process.returncode is None, f"service exited early:\n{logged}"
        assert time.monotonic() < deadline, f"{count} x {text!r} not logged within {limit} s:\n{logged}"
        await asyncio.sleep(0.05)


async def _get(client: httpx.AsyncClient, path: str, token: str) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.get(path, headers={**NEW_CONNECTION, **auth(token)})
    except httpx.HTTPError as exc:
        return Outcome(started, time.monotonic(), path, type(exc).__name__)
    status, body, retry_after = str(response.status_code), response.json(), response.headers.get("Retry-After")
    return Outcome(started, time.monotonic(), path, status, body, retry_after)


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_load_drains(database_url: str, tmp_path: Path, workers: int) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "PROMETHEUS_"))}
    env |= {
        "SERVICE_ENVIRONMENT": "test",
        "SERVICE_SECRET_KEY": secrets.token_urlsafe(48),  # one for every worker (test would give each its own)
        "SERVICE_DATABASE_URL": database_url,
        "SERVICE_SHUTDOWN_DELAY": str(DELAY),
        "SERVICE_SHUTDOWN_TIMEOUT": str(TIMEOUT),
        "SERVICE_LOG_FORMAT": "json",
        "SERVICE_RATE_LIMITS_ENABLED": "false",
        # The writers wait on the test's lock for the whole drain.
        "SERVICE_DATABASE_LOCK_TIMEOUT": "30",
        "SERVICE_DATABASE_STATEMENT_TIMEOUT": "30",
        "SERVICE_DATABASE_COMMAND_TIMEOUT": "40",
        # Enough for the load here, and few: the shared server's connections are shared with the rest of the suite.
        "SERVICE_DATABASE_POOL_SIZE": "8",
        # A busy machine must not turn a slow checkout into a 503: pool waits are not what this test is about.
        "SERVICE_DATABASE_POOL_TIMEOUT": "30",
    }
    command = [str(Path(sys.executable).with_name("service")), "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as output:
        # Its own process group: whatever happens, the cleanup below ends the service and its workers, nothing else.
        process = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=env, stdout=output, stderr=output, start_new_session=True
        )
    lock = await asyncpg.connect(_dsn(database_url))
    writers: list[asyncio.Task[httpx.Response]] = []
    try:
        await _wait_for_log(log, "Application startup complete.", workers, STARTUP_LIMIT, process)
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as client:
            assert (await client.get("/health/ready")).status_code == 200
            name = f"drainer{workers}"
            user = {"username": name, "email": f"{name}@example.com", "password": "correct-horse-battery"}
            registered = await client.post("/api/users", json={"user": user})
            assert registered.status_code == 201, registered.text
            token: str = registered.json()["user"]["token"]

            # Slow requests: writers blocked on the test's lock (reads of the table go on).
            articles_before = await lock.fetchval("SELECT count(*) FROM articles")
            held = lock.transaction()
            await held.start()
            await lock.execute("LOCK TABLE articles IN EXCLUSIVE MODE")
            writers += [
                asyncio.create_task(
                    client.post("/api/articles", json={"article": article_payload()}, headers=auth(token))
                )
                for _ in range(SLOW_WRITERS)
            ]
            deadline = time.monotonic() + 20
            while await lock.fetchval(WAITING) < SLOW_WRITERS:
                assert time.monotonic() < deadline, "the writers never reached the lock"
                await asyncio.sleep(0.05)

            # Fast load and a readiness poller, each request on a new connection.
            sending = True
            fast: list[Outcome] = []
            readiness: list[Outcome] = []

            async def load(index: int) -> None:
                n = index
                while sending:
                    fast.append(await _get(client, FAST_PATHS[n % len(FAST_PATHS)], token))
                    n += 1

            async def poll_readiness() -> None:
                while sending:
                    readiness.append(await _get(client, "/health/ready", token))
                    await asyncio.sleep(0.05)

            senders = [asyncio.create_task(load(i)) for i in range(FAST_CLIENTS)]
            senders.append(asyncio.create_task(poll_readiness()))
            await asyncio.sleep(0.5)
            terminated = time.monotonic()
            process.send_signal(signal.SIGTERM)

            while not any(o.draining for o in readiness):  # at once: well within the first half of the delay
                assert time.monotonic() < terminated + DELAY / 2, f"readiness not draining: {readiness}"
                await asyncio.sleep(0.02)
            first_503 = next(o.started for o in readiness if o.draining)
            # The load balancer takes a while to notice, well within the delay; then it sends nothing more here.
            await asyncio.sleep(max(0.0, terminated + 0.6 * DELAY - time.monotonic()))
            sending = False
            await asyncio.gather(*senders)

            # Past the delay every worker closes its listener: a new connection is refused, not accepted and reset.
            await _wait_for_log(log, "Shutting down", workers, DELAY + MARGIN, process)
            assert time.monotonic() - terminated >= DELAY
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    await client.get("/health/live", headers=NEW_CONNECTION)
                await asyncio.sleep(0.05)
            assert not any(writer.done() for writer in writers), "the slow writers were to be in flight still"

            await held.rollback()  # the writers go on; each must get its full 201
            written = await asyncio.gather(*writers)
        assert [response.status_code for response in written] == [201] * SLOW_WRITERS, [r.text for r in written]
        await asyncio.wait_for(process.wait(), terminated + DELAY + TIMEOUT + MARGIN - time.monotonic())
        assert process.returncode == 0, log.read_text()
        assert await lock.fetchval("SELECT count(*) FROM articles") == articles_before + SLOW_WRITERS
    finally:
        for writer in writers:
            writer.cancel()
        await lock.close()
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    text = log.read_text()
    # Every request accepted, before the SIGTERM or during the delay, got its 200.
    assert fast
    assert all(o.result == "200" for o in fast), [o for o in fast if o.result != "200"]
    assert any(o.started > first_503 for o in fast), "no request was served during the delay"
    # Readiness: not draining before the signal; after it 503 with the reason, the shape and Retry-After of any 503
    # (two workers get the signal one after the other).
    assert not any(o.draining for o in readiness if o.ended < terminated), readiness
    assert any(o.result == "200" for o in readiness if o.ended < terminated), readiness
    after = [o for o in readiness if o.started > first_503 + 0.2]
    assert after
    assert all(o.draining for o in after), readiness
    for outcome in (o for o in readiness if o.draining):
        assert outcome.result == "503"
        assert outcome.body is not None
        assert outcome.body["status"] == "unavailable"
        assert outcome.retry_after is not None
    assert text.count("shutdown: draining") == workers
    assert text.count('"msg":"service stopped"') == workers  # each worker's lifespan shutdown: engine disposed
    assert "Traceback" not in text
    assert '"level":"error"' not in text, text
