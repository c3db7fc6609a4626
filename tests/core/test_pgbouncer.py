"""The app behind a real PgBouncer in transaction pooling mode (``SERVICE_DATABASE_PGBOUNCER``).

In that mode consecutive statements of one client connection may run on different server connections, so a
statement prepared (and cached) on one is missing, or taken by another client's, on the next. Debian 12's PgBouncer
(1.18) keeps no prepared statements at all. The test puts a PgBouncer of its own (Debian's package, a free port) in
front of the shared PostgreSQL, with far fewer server connections than the app pools, and runs concurrent
registrations, writes and reads through the app's real lifespan (engine, readiness probe): every one must succeed.
Skipped when pgbouncer is not installed, except under ``CI=true`` (.ci/run installs it), where that is a failure.
"""

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url

from service.core import migrations
from service.core.config import load_settings
from service.core.db import pgbouncer_connect_args
from service.main import create_app
from tests.conftest import IN_CI, create_postgres_database, drop_postgres_database
from tests.helpers import article_payload, auth, register, serving

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
SERVER_POOL = 2  # server connections PgBouncer opens to the database
APP_POOL = 8  # client connections the app pools: four per server connection, so they are shuffled
CONCURRENCY = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_pgbouncer(server_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of ``server_url``'s server; yields the URL through it."""
    assert PGBOUNCER is not None
    url = make_url(server_url)
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-test-"))
    user = url.username or "postgres"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={url.host or '127.0.0.1'} port={url.port or 5432}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\npool_mode = transaction\n"
        f"default_pool_size = {SERVER_POOL}\nmin_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 100\n"
    )
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root; -u drops to the postgres user
        owner = pwd.getpwnam("postgres")
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command[1:1] = ["-u", "postgres"]
    log = (workdir / "pgbouncer.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603 - our own arguments
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {(workdir / 'pgbouncer.log').read_text()}")
            time.sleep(0.05)
        yield url.set(port=port, host="127.0.0.1").render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def database_behind_pgbouncer() -> AsyncIterator[tuple[str, str]]:
    """(direct URL, URL through PgBouncer) of a migrated database of the test's own."""
    if PGBOUNCER is None:
        if IN_CI:
            pytest.fail("pgbouncer is not installed (apt-get install pgbouncer); .ci/run installs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    name, direct = await create_postgres_database("conduit_pgbouncer")
    try:
        await asyncio.to_thread(migrations.upgrade, direct)  # migrations go straight to PostgreSQL, as in production
        with running_pgbouncer(direct) as through:
            yield direct, through
    finally:
        await drop_postgres_database(name)


async def _server_connections(direct: str) -> int:
    url = make_url(direct)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database="postgres")
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", url.database
        )
        return count
    finally:
        await conn.close()


async def test_default_statement_cache_breaks_behind_pgbouncer(database_behind_pgbouncer: tuple[str, str]) -> None:
    """What the setting is for: asyncpg's default cached (named) statements fail through transaction pooling, and
    with the setting's connect arguments the same load on the same PgBouncer does not."""
    _, through = database_behind_pgbouncer
    url = make_url(through)

    async def errors_of(connect_args: dict[str, Any]) -> list[str]:
        async def worker() -> list[str]:
            conn = await asyncpg.connect(
                host=url.host, port=url.port, user=url.username, database=url.database, **connect_args
            )
            errors: list[str] = []
            try:
                for n in range(30):
                    try:
                        await conn.fetchval("SELECT $1::int + 1", n)
                    except asyncpg.PostgresError as exc:
                        errors.append(type(exc).__name__)
            finally:
                await conn.close()
            return errors

        return [error for errors in await asyncio.gather(*(worker() for _ in range(8))) for error in errors]

    defaults = await errors_of({})
    assert defaults, "asyncpg's statement cache unexpectedly survived transaction pooling"
    assert set(defaults) == {"InvalidSQLStatementNameError"}
    settings = load_settings(environment="test", database_url=through, database_pgbouncer=True)
    asyncpg_args = {k: v for k, v in pgbouncer_connect_args(settings).items() if k != "prepared_statement_cache_size"}
    assert asyncpg_args == {"statement_cache_size": 0}  # the other one is SQLAlchemy's, exercised below
    assert await errors_of(asyncpg_args) == []


async def test_requests_through_pgbouncer_in_transaction_mode(database_behind_pgbouncer: tuple[str, str]) -> None:
    direct, through = database_behind_pgbouncer
    settings = load_settings(
        environment="test",
        database_url=through,
        database_pgbouncer=True,
        database_pool_size=APP_POOL,
        log_format="json",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:  # the real engine and readiness probe of the settings
        assert state is not None
        transport = ASGITransport(app=serving(app, state["database"]))
        async with AsyncClient(transport=transport, base_url="http://test/api") as client:
            ready = await client.get("http://test/health/ready")
            assert ready.status_code == 200, ready.text

            users = await asyncio.gather(*(register(client) for _ in range(CONCURRENCY)))

            async def write(user: dict[str, Any]) -> str:
                headers = auth(user["token"])
                created = await client.post("/articles", json={"article": article_payload()}, headers=headers)
                assert created.status_code == 201, created.text
                slug: str = created.json()["article"]["slug"]
                favorited = await client.post(f"/articles/{slug}/favorite", headers=headers)
                assert favorited.status_code == 200, favorited.text
                return slug

            slugs = await asyncio.gather(*(write(user) for user in users))

            async def read(user: dict[str, Any], slug: str) -> None:
                headers = auth(user["token"])
                for path in (
                    "/articles?limit=5",
                    f"/articles/{slug}",
                    "/user",
                    "/tags",
                    f"/profiles/{user['username']}",
                ):
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 200, f"{path}: {response.text}"
                article = (await client.get(f"/articles/{slug}", headers=headers)).json()["article"]
                assert article["favorited"] is False  # favorited by its author only, whose write this read sees
                assert article["favoritesCount"] == 1

            for _ in range(3):  # rounds of concurrent reads, every user on another's article
                await asyncio.gather(*(read(user, slugs[(i + 1) % len(slugs)]) for i, user in enumerate(users)))

            listing = (await client.get("/articles?limit=100")).json()
            assert listing["articlesCount"] == CONCURRENCY
            # Every request ran on PgBouncer's few server connections, not on the app's pool of client connections.
            assert await _server_connections(direct) <= SERVER_POOL
