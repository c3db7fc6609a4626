"""core.db_health: which errors are "database unavailable", the burst log, readiness's probe, and the 503 they make.

The real faults (a server stopped, starting, locked, paused) are in test_db_faults.py; these run everywhere.
"""

import asyncio
import logging
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from service.core.config import Settings
from service.core.db import Query, build_database, build_engine, build_probe, create_engine_for, postgresql_connect_args
from service.core.db_health import DatabaseFailure, DatabaseHealth, DatabaseProbe, classify, describe
from service.core.logging import logging_config
from service.main import create_app
from tests.helpers import serving

SECRET = "h" * 48


def _wrapped(driver_error: Exception) -> DBAPIError:
    """What SQLAlchemy raises for an asyncpg error: a DBAPIError around its adapted error around the driver's."""
    adapted: Exception = AsyncAdapt_asyncpg_dbapi.Error(str(driver_error), driver_error)  # type: ignore[no-untyped-call]  # SQLAlchemy's adapter class is untyped
    return _as_dbapi_error(DBAPIError.instance("SELECT 1", None, adapted, AsyncAdapt_asyncpg_dbapi.Error))


def _as_dbapi_error(error: Any) -> DBAPIError:
    assert isinstance(error, DBAPIError)  # instance() is typed for every StatementError it can make
    return error


def _closed_by(fatal: Exception) -> Exception:
    """asyncpg's error for a query whose connection the server closed, carrying the server's FATAL error."""
    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    lost.__cause__ = fatal
    return lost


def _sqlite_locked() -> sqlite3.OperationalError:
    """A real "database is locked": a second writer that does not wait while the first holds the lock."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "locked.db"
        holder = sqlite3.connect(path, isolation_level=None)
        waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            waiter.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            return error
        finally:
            holder.close()
            waiter.close()
    raise AssertionError("the second writer got the lock")


def _driver_path(error: Exception, **kwargs: Any) -> DBAPIError:
    """What core.db.Query raises: a DBAPIError straight around the driver's error."""
    return _as_dbapi_error(DBAPIError.instance("SELECT 1", [], error, Exception, **kwargs))


CLOSED = "cannot perform operation: connection is closed"
UNAVAILABLE_CASES = [  # error, kind, whether the connection must be dropped
    pytest.param(_wrapped(asyncpg.CannotConnectNowError("starting up")), "connection", True, id="starting up"),
    pytest.param(_wrapped(asyncpg.CannotConnectNowError("shutting down")), "connection", True, id="shutting down"),
    pytest.param(_wrapped(asyncpg.AdminShutdownError("terminating")), "connection", True, id="fast shutdown"),
    pytest.param(_wrapped(asyncpg.CrashShutdownError("crash of another")), "connection", True, id="crash"),
    pytest.param(_wrapped(_closed_by(asyncpg.AdminShutdownError("bye"))), "connection", True, id="closed mid-query"),
    pytest.param(_wrapped(asyncpg.TooManyConnectionsError("too many")), "resources", False, id="too many clients"),
    pytest.param(_wrapped(asyncpg.QueryCanceledError("canceling")), "timeout", False, id="statement timeout"),
    pytest.param(_wrapped(asyncpg.LockNotAvailableError("no lock")), "timeout", False, id="lock timeout"),
    pytest.param(_wrapped(asyncpg.DeadlockDetectedError("deadlock")), "conflict", False, id="deadlock"),
    pytest.param(_wrapped(asyncpg.SerializationError("serialize")), "conflict", False, id="serialization"),
    pytest.param(_driver_path(asyncpg.AdminShutdownError("bye")), "connection", True, id="driver path"),
    pytest.param(_wrapped(asyncpg.InterfaceError(CLOSED)), "connection", True, id="used after close"),
    pytest.param(ConnectionRefusedError(111, "Connect call failed"), "connection", True, id="refused"),
    pytest.param(OSError("Multiple exceptions: [Errno 111] ..."), "connection", True, id="several addresses"),
    pytest.param(FileNotFoundError(2, "No such file or directory"), "connection", True, id="no socket file"),
    pytest.param(TimeoutError(), "timeout", True, id="command timeout"),
    pytest.param(_driver_path(TimeoutError()), "timeout", True, id="command timeout, driver path"),
    pytest.param(PoolTimeoutError("QueuePool limit of size 20 reached"), "timeout", False, id="pool exhausted"),
    pytest.param(DBAPIError.instance("BEGIN", [], _sqlite_locked(), sqlite3.Error), "timeout", False, id="sqlite"),
    pytest.param(_driver_path(ValueError("?"), connection_invalidated=True), "connection", True, id="invalidated"),
]


@pytest.mark.parametrize(("error", "kind", "drop"), UNAVAILABLE_CASES)
def test_unavailable_errors_are_classified(error: Exception, kind: str, drop: bool) -> None:
    failure = classify(error)
    assert failure is not None
    assert (failure.kind, failure.drop_connection) == (kind, drop)
    assert "SELECT" not in failure.detail  # the driver's message, never the statement


def test_the_server_s_own_error_is_named() -> None:
    failure = classify(_wrapped(_closed_by(asyncpg.AdminShutdownError("terminating connection"))))
    assert failure == DatabaseFailure("connection", "AdminShutdownError", "57P01", "terminating connection", True)
    starting = classify(_wrapped(asyncpg.CannotConnectNowError("the database system is starting up")))
    assert starting is not None
    assert (starting.error, starting.sqlstate) == ("CannotConnectNowError", "57P03")


BUG_CASES = [
    pytest.param(_wrapped(asyncpg.UniqueViolationError("duplicate key")), id="unique violation"),
    pytest.param(_wrapped(asyncpg.UndefinedTableError('relation "x" does not exist')), id="undefined table"),
    pytest.param(_driver_path(asyncpg.DivisionByZeroError("division by zero")), id="division by zero"),
    pytest.param(_wrapped(asyncpg.InterfaceError("another operation is in progress")), id="concurrent use"),
    pytest.param(
        DBAPIError.instance("SELECT", [], sqlite3.OperationalError("no such table: x"), sqlite3.Error), id="sqlite"
    ),
    pytest.param(ValueError("no"), id="not a database error"),
]


@pytest.mark.parametrize("error", BUG_CASES)
def test_other_errors_are_not_unavailability(error: BaseException) -> None:
    assert classify(error) is None
    assert describe(error).kind == "error"


# ---------------------------------------------------------------------------------------------------------------
# The burst log


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FAILURE = DatabaseFailure("connection", "ConnectionRefusedError", None, "[Errno 111] refused", True)


@pytest.fixture
def health_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="service.core.db_health")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    keys = ("kind", "error", "sqlstate", "detail", "failed", "failed_since_last_report", "seconds")
    return [
        (r.getMessage(), {k: r.__dict__[k] for k in keys if k in r.__dict__})
        for r in caplog.records
        if r.name == "service.core.db_health"
    ]


def test_a_burst_is_logged_once_then_counted_then_ended(health_log: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = DatabaseHealth(report_every=10, settle=1, clock=clock)
    health.answered()  # healthy: nothing to say
    for _ in range(50):
        health.failed(FAILURE)
        clock.now += 0.1  # 5 s of failures
    assert health.failing
    assert _lines(health_log) == [
        ("database unavailable: requests get 503", FAILURE.fields()),
    ]
    for _ in range(60):  # 6 s more: one count line at the 10 s mark
        health.failed(FAILURE)
        clock.now += 0.1
    health.answered()  # right after a failure: not over yet (another table may still be failing)
    assert health.failing
    clock.now += 1.0
    health.answered()
    assert not health.failing
    lines = _lines(health_log)
    assert [message for message, _ in lines] == [
        "database unavailable: requests get 503",
        "database still unavailable",
        "database available again",
    ]
    assert lines[1][1]["failed"] == 101
    assert lines[1][1]["failed_since_last_report"] == 100
    assert lines[2][1] == {"failed": 110, "seconds": 10.9}
    assert all(not r.exc_info for r in health_log.records)


def test_the_next_burst_is_logged_again(health_log: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = DatabaseHealth(settle=0, clock=clock)
    health.failed(FAILURE)
    health.answered()
    clock.now += 60
    health.failed(DatabaseFailure("timeout", "QueryCanceledError", "57014", "canceling statement", False))
    health.answered()
    messages = [(message, fields.get("sqlstate")) for message, fields in _lines(health_log)]
    assert messages == [
        ("database unavailable: requests get 503", None),
        ("database available again", None),
        ("database unavailable: requests get 503", "57014"),
        ("database available again", None),
    ]


# ---------------------------------------------------------------------------------------------------------------
# The readiness probe


def _connect_that(behaviour: Any, calls: list[int]) -> Any:
    @asynccontextmanager
    async def connect() -> AsyncIterator[Any]:
        calls.append(1)
        await behaviour()

        class Connection:
            async def execute(self, statement: Any) -> None:
                return None

        yield Connection()

    return connect


async def test_the_probe_answers_within_its_timeout_when_the_database_hangs() -> None:
    calls: list[int] = []
    probe = DatabaseProbe(_connect_that(asyncio.Event().wait, calls), 0.2)  # a connect that never returns
    started = time.perf_counter()
    results = await asyncio.gather(probe.check(), probe.check(), probe.check(), return_exceptions=True)
    assert all(isinstance(result, TimeoutError) for result in results)
    assert time.perf_counter() - started < 2
    assert calls == [1]  # concurrent checks shared one attempt
    await probe.aclose()  # cancels the attempt still running


async def test_the_probe_reports_failures_and_successes() -> None:
    calls: list[int] = []

    async def refuse() -> None:
        raise ConnectionRefusedError(111, "refused")

    failing = DatabaseProbe(_connect_that(refuse, calls), 1.0)
    with pytest.raises(ConnectionRefusedError):
        await failing.check()
    with pytest.raises(ConnectionRefusedError):
        await failing.check()  # a finished attempt is never reused
    assert calls == [1, 1]

    async def fine() -> None:
        return None

    await DatabaseProbe(_connect_that(fine, calls), 1.0).check()


async def test_build_probe_on_sqlite_checks_the_file(tmp_path: Path) -> None:
    probe = build_probe(_settings(tmp_path))
    await probe.check()
    await probe.aclose()


# ---------------------------------------------------------------------------------------------------------------
# Settings and the engine


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        environment="test", secret_key=SECRET, database_url=f"sqlite+aiosqlite:///{tmp_path}/h.db", **overrides
    )


def test_database_timeouts_have_bounded_defaults(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.database_pool_timeout == timedelta(seconds=5)
    assert settings.database_statement_timeout < settings.database_command_timeout
    assert postgresql_connect_args(settings) == {
        "timeout": 5.0,
        "command_timeout": 15.0,
        "server_settings": {"statement_timeout": "10000", "lock_timeout": "5000"},
    }
    assert postgresql_connect_args(settings, serving=False) == {"timeout": 5.0}


def test_database_timeouts_parse_seconds_and_zero_turns_them_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_DATABASE_LOCK_TIMEOUT", "0.25")
    monkeypatch.setenv("SERVICE_DATABASE_STATEMENT_TIMEOUT", "0")
    monkeypatch.setenv("SERVICE_DATABASE_COMMAND_TIMEOUT", "0")
    monkeypatch.setenv("SERVICE_READINESS_TIMEOUT", "PT1.5S")
    settings = _settings(tmp_path)
    assert settings.database_lock_timeout == timedelta(milliseconds=250)
    assert settings.readiness_timeout == timedelta(seconds=1.5)
    assert postgresql_connect_args(settings) == {"timeout": 5.0, "server_settings": {"lock_timeout": "250"}}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("database_connect_timeout", 0),
        ("database_pool_timeout", -1),
        ("readiness_timeout", 0),
        ("database_lock_timeout", -1),
    ],
)
def test_database_timeouts_refuse_impossible_values(tmp_path: Path, name: str, value: float) -> None:
    with pytest.raises(ValidationError):
        _settings(tmp_path, **{name: value})


def test_the_pool_does_not_log_each_dropped_connection(tmp_path: Path) -> None:
    loggers = logging_config(_settings(tmp_path))["loggers"]
    assert loggers["sqlalchemy.pool"]["level"] == "WARNING"


# ---------------------------------------------------------------------------------------------------------------
# The 503 itself


ROUTE_ERRORS: dict[str, BaseException] = {
    "starting": _wrapped(asyncpg.CannotConnectNowError("the database system is starting up")),
    "pool": PoolTimeoutError("QueuePool limit reached"),
    "bug": _wrapped(asyncpg.UndefinedColumnError('column "x" does not exist')),
    "file": FileNotFoundError(2, "No such file or directory: 'x.json'"),  # an OSError, not from the database
}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def failing_client(tmp_path: Path) -> AsyncIterator[tuple[AsyncClient, Any, list[logging.LogRecord]]]:
    app = create_app(_settings(tmp_path, database_retry_after=7))
    silent = socket.socket()  # accepts connections (the kernel does) and never says a word: a hung server
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    drivers = {
        "refused": create_engine_for("postgresql+asyncpg://nobody@127.0.0.1:1/none", poolclass=NullPool),
        "hung": create_engine_for(
            f"postgresql+asyncpg://nobody@127.0.0.1:{silent.getsockname()[1]}/none",
            poolclass=NullPool,
            connect_args={"timeout": 0.2},
        ),
    }

    @app.get("/fail/{case}")
    async def fail(case: str) -> None:
        if case in drivers:  # the driver's own OSError, raised unwrapped from its connect
            async with drivers[case].connect():
                pass
        raise ROUTE_ERRORS[case]

    engine = create_engine_for(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    database = build_database(engine)
    handler = Records()
    logging.getLogger().addHandler(handler)  # after create_app, which configures logging
    try:
        async with AsyncClient(transport=ASGITransport(app=serving(app, database)), base_url="http://t") as client:
            yield client, database, handler.records
    finally:
        logging.getLogger().removeHandler(handler)
        await engine.dispose()
        for driver in drivers.values():
            await driver.dispose()
        silent.close()


async def test_unavailable_is_a_503_with_retry_after_logged_once_without_traceback(
    failing_client: tuple[AsyncClient, Any, list[logging.LogRecord]],
) -> None:
    client, database, records = failing_client
    for case in ("starting", "refused", "hung", "pool", "starting"):
        response = await client.get(f"/fail/{case}")
        assert response.status_code == 503
        assert response.json() == {"errors": {"database": ["unavailable"]}}
        assert response.headers["Retry-After"] == "7"
    assert database.health.failed_count == 5
    burst = [r for r in records if r.name == "service.core.db_health"]
    assert [(r.getMessage(), r.__dict__["sqlstate"]) for r in burst] == [
        ("database unavailable: requests get 503", "57P03")
    ]
    assert not any(r.exc_info for r in records)


@pytest.mark.parametrize("case", ["bug", "file"])
async def test_any_other_error_stays_a_500(
    failing_client: tuple[AsyncClient, Any, list[logging.LogRecord]], case: str
) -> None:
    client, database, records = failing_client
    response = await client.get(f"/fail/{case}")
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}
    assert database.health.failed_count == 0
    assert [r.getMessage() for r in records if r.exc_info] == ["unhandled error"]  # a bug keeps its traceback


# ---------------------------------------------------------------------------------------------------------------
# The engine's rules, on the shared PostgreSQL


async def test_a_client_side_timeout_drops_the_connection_at_once(engine: AsyncEngine, backend: str) -> None:
    """A command the server does not answer in time: the connection is dropped (the command may still run), and
    without the graceful close (up to 2 s) that a server which is not answering would never complete."""
    if backend != "postgresql":
        pytest.skip("asyncpg's command timeout")
    url = engine.url.render_as_string(hide_password=False)
    timing_out = create_engine_for(url, pool_size=1, max_overflow=0, connect_args={"command_timeout": 0.2})
    try:
        for run in ("sqlalchemy", "driver"):
            async with timing_out.connect() as connection:
                started = time.perf_counter()
                with pytest.raises((TimeoutError, DBAPIError)) as caught:
                    await _sleep(connection, run)
                assert time.perf_counter() - started < 1.5, run
                failure = classify(caught.value)
                assert failure is not None
                assert (failure.kind, failure.drop_connection) == ("timeout", True)
                assert connection.invalidated
            async with timing_out.connect() as connection:  # the pool's one connection is a fresh one
                assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await timing_out.dispose()


async def _sleep(connection: AsyncConnection, run: str) -> None:
    if run == "sqlalchemy":
        await connection.execute(text("SELECT pg_sleep(1)"))
    else:
        await Query(select(func.pg_sleep(1))).all(connection)


async def test_the_app_engine_bounds_statements_and_lock_waits(engine: AsyncEngine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL's own timeouts")
    settings = Settings(
        environment="test",
        secret_key=SECRET,
        database_url=engine.url.render_as_string(hide_password=False),
        database_statement_timeout=timedelta(milliseconds=200),
        database_lock_timeout=timedelta(milliseconds=100),
    )
    app_engine = build_engine(settings)
    try:
        async with app_engine.connect() as connection:
            shown = await connection.execute(
                text("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
            )
            assert tuple(shown.one()) == ("200ms", "100ms")
            with pytest.raises(DBAPIError) as caught:
                await connection.execute(text("SELECT pg_sleep(1)"))
            failure = classify(caught.value)
            assert failure is not None
            assert (failure.kind, failure.sqlstate, failure.drop_connection) == ("timeout", "57014", False)
            await connection.rollback()
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1  # still usable
    finally:
        await app_engine.dispose()
