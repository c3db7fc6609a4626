"""/metrics under the real ``service serve --workers 2``: whichever worker answers the scrape, the counters are the
sum of both, and a worker that died stops counting in the live gauges (its requests stay counted). Last, the pool
gauges of one process (an in-process app, both backends).

The server runs on a migrated SQLite file in a temporary directory; ``PROMETHEUS_MULTIPROC_DIR`` is left unset, so
``serve`` makes its own directory (under the test's TMPDIR) and removes it when it exits.
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import ASGITransport, AsyncClient
from prometheus_client import generate_latest, multiprocess
from sqlalchemy import text

from service.core import migrations
from service.core.config import Settings
from service.core.metrics import MULTIPROC_ENV, POOL_GAUGES
from service.main import create_app

SERVICE = Path(sys.executable).parent / "service"
START_TIMEOUT_S = 120.0  # two interpreters importing the app on a busy machine
TAGS = 'http_requests_total{method="GET",route="/api/tags",status="200"}'


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    tmpdir: Path
    log: Path

    def metrics_dir(self) -> Path:
        made = list(self.tmpdir.glob("conduit-metrics-*"))
        assert len(made) == 1, made
        return made[0]

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        # The spawned workers, not multiprocessing's resource tracker.
        return {int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> httpx.Response:
    # A connection per request: the kernel hands each one to whichever worker accepts first.
    return httpx.get(url, timeout=10)


def _wait_until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def sample(text: str, name: str) -> float | None:
    """The value of one exposition line (a metric name with its labels), or None when absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


@contextmanager
def serving(root: Path) -> Iterator[Server]:
    """``service serve --workers 2`` on a fresh migrated SQLite file under ``root``, stopped at the end."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the workers from /proc")
    url = f"sqlite+aiosqlite:///{root / 'conduit.db'}"
    migrations.upgrade(url)
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_") and k != MULTIPROC_ENV}
    env |= {
        "SERVICE_DATABASE_URL": url,
        "SERVICE_SECRET_KEY": secrets.token_urlsafe(48),
        "SERVICE_ENVIRONMENT": "test",
        "SERVICE_LOG_LEVEL": "WARNING",
        "SERVICE_SHUTDOWN_DELAY": "0",  # no load balancer to wait for
        "TMPDIR": str(tmpdir),
    }
    port = _free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own entry point
            [str(SERVICE), "serve", "--workers", "2", "--port", str(port)],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(process, f"http://127.0.0.1:{port}", tmpdir, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return _get(f"{running.url}/health/live").status_code == 200 and len(running.workers()) == 2
            except httpx.TransportError:
                return False

        _wait_until(ready, "the server", START_TIMEOUT_S)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("multiprocess")) as running:
        yield running


def tags_answered(directory: Path) -> dict[int, float]:
    """pid -> the /api/tags requests that worker counted, read from its own file."""
    merge: Any = multiprocess.MultiProcessCollector.merge  # untyped in prometheus_client
    counted = {}
    for path in directory.glob("counter_*.db"):
        samples = [s for family in merge([str(path)], accumulate=False) for s in family.samples]
        counted[int(path.stem.rsplit("_", 1)[1])] = sum(
            s.value for s in samples if s.name == "http_requests_total" and s.labels.get("route") == "/api/tags"
        )
    return counted


def test_every_scrape_counts_the_requests_of_both_workers(server: Server) -> None:
    directory = server.metrics_dir()
    before = sum(tags_answered(directory).values())
    sent = 0

    def both_answered() -> bool:
        counted = tags_answered(directory)
        return sent > 0 and all(counted.get(pid, 0) > 0 for pid in server.workers())

    # Until both workers have answered some (concurrent requests on fresh connections spread between them).
    with ThreadPoolExecutor(8) as pool:
        while not both_answered():
            assert sent < 2000, f"one worker answered every request: {tags_answered(directory)}"
            responses = list(pool.map(lambda _: _get(f"{server.url}/api/tags"), range(16)))
            assert all(r.status_code == 200 for r in responses)
            sent += len(responses)
        scrapes = list(pool.map(lambda _: _get(f"{server.url}/metrics"), range(12)))
    assert sum(tags_answered(directory).values()) == before + sent
    for scrape in scrapes:
        assert scrape.status_code == 200
        assert sample(scrape.text, TAGS) == before + sent, scrape.text
        assert "http_request_duration_seconds_bucket" in scrape.text
    duration_count = 'http_request_duration_seconds_count{method="GET",route="/api/tags"}'
    assert sample(scrapes[0].text, duration_count) == before + sent


def test_pool_and_process_gauges_are_summed_over_live_workers(server: Server) -> None:
    # SQLite files get SQLAlchemy's default pool (5 connections) in each worker; each writes its figures every second.
    size = 'db_pool_size{pool="primary"}'

    def summed() -> bool:
        return sample(_get(f"{server.url}/metrics").text, size) == 10

    _wait_until(summed, "both workers' pool gauges")
    for _ in range(8):
        assert _get(f"{server.url}/api/tags").status_code == 200
    text = _get(f"{server.url}/metrics").text
    assert (sample(text, 'db_pool_checked_out{pool="primary"}') or 0) >= 0
    assert (sample(text, "process_resident_memory_bytes") or 0) > 0
    assert (sample(text, "process_cpu_seconds_total") or 0) > 0
    assert sample(text, "http_requests_in_progress") is not None
    before = sample(text, TAGS)
    assert before is not None
    assert before >= 8

    victim = min(server.workers())
    os.kill(victim, signal.SIGKILL)
    # uvicorn starts another worker; the dead one's live gauges are dropped, its counted requests are kept.
    _wait_until(lambda: victim not in server.workers() and len(server.workers()) == 2, "a replacement worker")
    _wait_until(summed, "the gauges of the two live workers only")
    assert sample(_get(f"{server.url}/metrics").text, TAGS) == before


def test_serve_removes_its_metrics_directory_at_exit(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        directory = server.metrics_dir()
        assert _get(f"{server.url}/metrics").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log.read_text()
    assert not directory.exists()


@pytest.mark.usefixtures("engine")  # the test database, migrated
async def test_pool_gauges_are_read_from_the_pool_at_scrape_time(settings: Settings, backend: str) -> None:
    # One process, the app's own registry: the lifespan's engine is watched, nothing runs per request.
    app = create_app(settings)
    async with app.router.lifespan_context(app) as started:
        state: dict[str, Any] = dict(started or {})

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = {**scope.get("state", {}), **state}
            await app(scope, receive, send)

        pool = state["engine"].sync_engine.pool
        client = AsyncClient(transport=ASGITransport(app=asgi), base_url="http://test")
        async with client, state["engine"].connect() as held:
            await held.execute(text("SELECT 1"))
            scraped = (await client.get("/metrics")).text
            # Background tasks (the outbox's sweep) use the pool too: read it and the registry with no await in
            # between, so that nothing else runs and both see the same moment.
            in_use, opened = pool.checkedout(), pool.checkedin() + pool.checkedout()
            now = generate_latest(app.state.metrics.registry).decode()
    size = settings.database_pool_size if backend == "postgresql" else 5  # SQLAlchemy's default for SQLite files
    overflow = settings.database_max_overflow if backend == "postgresql" else 10
    for name in POOL_GAUGES:
        assert sample(scraped, f'db_pool_{name}{{pool="primary"}}') is not None, name
    assert sample(scraped, 'db_pool_size{pool="primary"}') == size
    assert sample(scraped, 'db_pool_max_overflow{pool="primary"}') == overflow
    assert (sample(scraped, 'db_pool_checked_out{pool="primary"}') or 0) >= 1  # ours at least
    assert in_use >= 1
    assert sample(now, 'db_pool_checked_out{pool="primary"}') == in_use
    assert sample(now, 'db_pool_connections{pool="primary"}') == opened
    assert sample(now, 'db_pool_overflow{pool="primary"}') == max(0, opened - size)
    assert sample(now, 'db_pool_waiters{pool="primary"}') == 0
