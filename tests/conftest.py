"""Test fixtures: every test runs over HTTP against real PostgreSQL *and* SQLite, rolled back afterwards.

``SERVICE_TEST_DATABASES`` picks the backends (default ``sqlite,postgresql``). PostgreSQL is reached at
``SERVICE_TEST_POSTGRES_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``); the fixtures
create a database of their own there and drop it at the end. When PostgreSQL is unreachable its tests are skipped
with the reason, except under ``CI=true``, where that is a failure.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.core import migrations
from service.core.config import Settings, load_settings
from service.core.db import Database, build_database, create_engine_for
from service.main import create_app
from tests.helpers import serving
from tests.mail_server import SMTPServer, running_smtp_server

POSTGRES_URL = os.environ.get("SERVICE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("SERVICE_TEST_DATABASES", "sqlite,postgresql").split(",") if b.strip()]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Real Argon2, with the smallest parameters: the suite registers thousands of users, and the production cost
    (tens of milliseconds each, by design) would dominate its run time. What is tested is the use of the hasher."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    from service.core import security

    production = security._hasher
    security._hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    yield
    security._hasher = production


async def _postgres_admin(sql: str) -> None:
    engine = create_engine_for(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def create_postgres_database(prefix: str) -> tuple[str, str]:
    """A new empty PostgreSQL database, as (name, url). Unreachable server: skip, except under CI (fail)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        await _postgres_admin(f'CREATE DATABASE "{name}"')
    except (OSError, ConnectionError) as exc:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL} ({type(exc).__name__}); SQLite tests still run")
    return name, make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(name: str) -> None:
    await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "conduit_test.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    name, url = await create_postgres_database("conduit_test")
    yield url
    await drop_postgres_database(name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # Migrate up, all the way down and up again: every test run proves both directions work.
    for step in (migrations.upgrade, migrations.downgrade, migrations.upgrade):
        await asyncio.to_thread(step, database_url)  # env.py calls asyncio.run(): keep it off this loop
    engine = create_engine_for(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def backend(engine: AsyncEngine) -> str:
    return engine.dialect.name


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()  # rolled back below: nothing a test writes survives it
        yield conn
        await outer.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(environment="test", database_url=database_url, log_format="json", log_level="INFO")


@pytest.fixture
def database(connection: AsyncConnection, sessionmaker: async_sessionmaker[AsyncSession]) -> Database:
    """Reads and writes on the test's rolled-back connection."""

    @asynccontextmanager
    async def reader() -> AsyncIterator[AsyncConnection]:
        yield connection

    return Database(writer=sessionmaker, reader=reader)


@pytest.fixture
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture
async def client(app: Any, database: Database) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=serving(app, database)), base_url="http://test/api") as c:
        yield c


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def selects(self) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(("SELECT", "WITH")))

    @property
    def total(self) -> int:
        """Statements a request sent, savepoint bookkeeping excluded."""
        return sum(
            1 for s in self.statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))
        )


@pytest.fixture
def count_statements(engine: AsyncEngine) -> Any:
    @contextmanager
    def _count() -> Iterator[StatementCounter]:
        counter = StatementCounter()

        def _listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            counter.statements.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", _listener)
        try:
            yield counter
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", _listener)

    return _count


@pytest.fixture
async def committing_client(settings: Settings, engine: AsyncEngine, backend: str) -> AsyncIterator[AsyncClient]:
    """A client whose requests really commit on their own pooled connections: for concurrency tests.

    PostgreSQL only (SQLite serialises writers anyway). Every table is emptied afterwards, so isolation holds.
    """
    if backend != "postgresql":
        pytest.skip("concurrency is exercised on PostgreSQL")
    from service.models import Base

    app = serving(create_app(settings), build_database(engine))  # the production database paths, committing
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as c:
        yield c
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables if t.name != "counters")
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await conn.execute(text("UPDATE counters SET value = 0"))  # the migration's row stays: it is never re-made


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real SMTP server on a free loopback port, keeping what it receives (tests/mail_server.py)."""
    with running_smtp_server() as server:
        yield server
