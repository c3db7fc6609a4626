"""Engine, sessions (one transaction per request) and the declarative base."""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, cast

import orjson
from fastapi import Depends, Request
from sqlalchemy import BigInteger, Connection, DateTime, Dialect, Integer, MetaData, Select, String, event
from sqlalchemy.engine import CursorResult, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from service.core.config import Settings
from service.core.db_health import DatabaseHealth, DatabaseProbe, classify

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Ids and the foreign keys to them: BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


# Execution option marking a transaction that will write (SQLite then begins it IMMEDIATE; others ignore it).
WRITE_INTENT = "service_write_intent"


def utcnow() -> datetime:
    return datetime.now(UTC)


def storable_text(text: str) -> bool:
    """Whether a database can hold this string: PostgreSQL refuses U+0000 and neither can encode a lone surrogate
    (JSON's ``"\\ud800"``), even as a query parameter. Input that is not storable is invalid or matches nothing."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def same_as_created(context: Any) -> datetime:
    """Default for ``updated_at``: the very instant chosen for ``created_at`` of the same row."""
    created: datetime = context.get_current_parameters()["created_at"]
    return created


def later_than(previous: datetime) -> datetime:
    """Now, but strictly after ``previous``: an update always moves ``updated_at`` forward."""
    now = utcnow()
    previous = previous if previous.tzinfo else previous.replace(tzinfo=UTC)
    return now if now > previous else previous + timedelta(microseconds=1)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp with microseconds on every dialect (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy reads it as a class attribute


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def configure_sqlite(engine: AsyncEngine) -> None:
    """Make SQLite behave like PostgreSQL: explicit BEGIN (so SAVEPOINT/rollback work) and foreign keys on."""

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver stops issuing BEGIN/COMMIT on its own
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # A transaction that will write takes the write lock up front and waits (busy_timeout) for its turn: two
        # deferred transactions that both read, then both try to write, fail at once with "database is locked".
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_INTENT) else "BEGIN")


def configure_postgresql(engine: AsyncEngine) -> None:
    """Never hand out, or pool again, a connection the server has closed or that may still be busy."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _refuse_closed(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        # Instead of pool_pre_ping (a round trip, with BEGIN/ROLLBACK, on every checkout): asyncpg marks a connection
        # closed as soon as the server's goodbye (or its socket's end) arrives, which after a restart is every pooled
        # one. Refused here, the pool opens a fresh one, so the first request after the database returns succeeds.
        # This connection only, not the whole pool: the others are checked the same way when their turn comes.
        if dbapi_conn.driver_connection.is_closed():
            raise DisconnectionError("closed by the server while pooled")

    @event.listens_for(engine.sync_engine, "handle_error")
    def _drop_lost(context: ExceptionContext) -> None:
        # SQLAlchemy's asyncpg dialect calls a connection lost only once asyncpg has seen it close, which a FATAL
        # shutdown error (57P01) precedes, and never after a client-side timeout, whose command may still run.
        failure = classify(context.original_exception)
        if failure is None or not failure.drop_connection:
            return
        connection = context.connection
        if failure.kind == "timeout" and connection is not None and not connection.invalidated:
            # Abort the socket now: invalidation would first try a graceful close, which waits (up to 2 s) for a
            # server that is not answering.
            driver: Any = connection.connection.driver_connection  # an asyncpg.Connection
            driver.terminate()
        context.is_disconnect = True
        # A server that closed the connection has usually closed them all (restart, failover): let older pooled ones
        # go too. A timeout says nothing about the other connections.
        context.invalidate_pool_on_disconnect = failure.kind == "connection"


def create_engine_for(url: str, **kwargs: Any) -> AsyncEngine:
    """The one place that builds an engine, so the app, Alembic, the CLI and tests get the same dialect setup."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, **kwargs)
        configure_sqlite(engine)
        return engine
    engine = create_async_engine(url, **kwargs)
    configure_postgresql(engine)
    return engine


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def _milliseconds(value: timedelta) -> str:
    return str(max(1, round(value.total_seconds() * 1000)))


def pgbouncer_connect_args(settings: Settings) -> dict[str, Any]:
    """Behind PgBouncer in transaction pooling mode (``database_pgbouncer``): no statement cache, in asyncpg or in
    SQLAlchemy's dialect, so every statement is unnamed. asyncpg sends Parse/Describe with Flush, not Sync, and
    Bind/Execute/Sync after: PgBouncer keeps one server connection for the whole exchange, and nothing prepared is
    left behind on it for another client's statement to collide with or miss."""
    if not settings.database_pgbouncer:
        return {}
    return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}


def postgresql_connect_args(settings: Settings, *, serving: bool = True) -> dict[str, Any]:
    """asyncpg's arguments: a bounded connect, and for serving requests bounded statements, lock waits and commands
    (config.py says why each). server_settings travel in the startup packet: no extra round trip."""
    args: dict[str, Any] = {"timeout": _seconds(settings.database_connect_timeout), **pgbouncer_connect_args(settings)}
    if not serving:
        return args
    if settings.database_command_timeout:
        args["command_timeout"] = _seconds(settings.database_command_timeout)
    server: dict[str, str] = {}
    if settings.database_statement_timeout:
        server["statement_timeout"] = _milliseconds(settings.database_statement_timeout)
    if settings.database_lock_timeout:
        server["lock_timeout"] = _milliseconds(settings.database_lock_timeout)
    if server and not settings.database_pgbouncer:  # PgBouncer refuses them: config.py says where they go instead
        args["server_settings"] = server
    return args


def build_engine(settings: Settings, *, serving: bool = True) -> AsyncEngine:
    """The engine for requests; ``serving=False`` (the CLI: migrations, seeding, recounts) keeps only the connect
    timeout, since an operator's long statement is not a stuck request."""
    # hide_parameters: a logged database error shows the SQL, never the values (e-mails, bodies, hashes).
    if settings.is_sqlite:
        return create_engine_for(settings.database_url, echo=settings.database_echo, hide_parameters=True)
    return create_engine_for(
        settings.database_url,
        echo=settings.database_echo,
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=_seconds(settings.database_pool_timeout),
        connect_args=postgresql_connect_args(settings, serving=serving),
        # No pool_pre_ping: configure_postgresql refuses closed connections at checkout without a round trip.
    )


def build_probe(settings: Settings) -> DatabaseProbe:
    """Readiness's own engine: one connection (PostgreSQL) that no request uses, every wait bounded by the
    readiness timeout, so a busy request pool never delays the answer."""
    timeout = _seconds(settings.readiness_timeout)
    if settings.is_sqlite:  # no server, no pool to queue behind: open the file for each check
        engine = create_engine_for(settings.database_url, poolclass=NullPool)
        return DatabaseProbe(engine.connect, timeout, dispose=engine.dispose)
    engine = create_engine_for(
        settings.database_url,
        hide_parameters=True,
        pool_size=1,
        max_overflow=0,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout, **pgbouncer_connect_args(settings)},
    )
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")  # SELECT 1 alone, no BEGIN/ROLLBACK
    return DatabaseProbe(reader.connect, timeout, dispose=engine.dispose)


# What a read needs: a connection (read routes have no session; ORM objects buy a read nothing), or the request's
# session on a write route, which reads through its own connection and sees its own changes.
Reads = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class Database:
    """The app's two ways into the database; lifespan state (``request.state.database``)."""

    writer: async_sessionmaker[AsyncSession]  # write routes: one transaction, committed before the response
    reader: Callable[[], AbstractAsyncContextManager[AsyncConnection]]  # read routes (GET, HEAD): nothing to commit
    health: DatabaseHealth = field(default_factory=DatabaseHealth)  # failures counted, each burst logged once
    probe: DatabaseProbe | None = None  # readiness's own connection; None: readiness checks through ``reader``


def build_database(engine: AsyncEngine, probe: DatabaseProbe | None = None) -> Database:
    writer = async_sessionmaker(engine, expire_on_commit=False)  # responses read attributes after commit
    if engine.dialect.name != "postgresql":
        return Database(writer, engine.connect, probe=probe)  # SQLite: a read transaction is free (no round trip)
    # PostgreSQL: reads in autocommit send no BEGIN and no COMMIT, two of a read's three round trips. READ
    # COMMITTED gives each statement its own snapshot anyway, so a transaction would make no read more consistent.
    return Database(writer, engine.execution_options(isolation_level="AUTOCOMMIT").connect, probe=probe)


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The sessionmaker for code outside a request (CLI, seed, tests): one transaction per ``session.begin()``."""
    return build_database(engine).writer


_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_db(request: Request) -> AsyncIterator[Reads]:
    """A read route's connection, or a write route's session (one transaction, committed before the response)."""
    database: Database = request.state.database
    if request.method in _READ_ONLY_METHODS:
        async with database.reader() as connection:
            yield connection
        database.health.answered()  # ends a burst of failures, if there was one
        return
    async with database.writer() as session:
        await session.connection(execution_options={WRITE_INTENT: True})
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    database.health.answered()


# scope="function": the commit runs before the response is sent, so a failed commit becomes an error response.
# One dependency, typed by the route that uses it: a write route gets its session, a read route its connection.
SessionDep = Annotated[AsyncSession, Depends(get_db, scope="function")]
ReadDep = Annotated[AsyncConnection, Depends(get_db, scope="function")]
ReadsDep = Annotated[Reads, Depends(get_db, scope="function")]  # for dependencies that serve both kinds of route


class Query:
    """A SELECT built once, at import, and run on every request with named parameters.

    On PostgreSQL it is compiled once and sent straight to the asyncpg connection underneath: SQLAlchemy's
    execution layer (execution context, parameter and result processing) cost about 110 us of CPU a statement,
    twice what asyncpg itself spends (profiled), and most reads are one or two statements. Elsewhere (SQLite) it
    runs through SQLAlchemy as usual. Either way a row is a tuple of the driver's values: on PostgreSQL an enum
    column comes back as its ``str`` value, and an aggregate over no rows as ``None``.
    """

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def for_postgresql(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            # (sql with $1.., the parameter name of each $n, the values of literals bound in the statement itself)
            self._compiled = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
        return self._compiled

    async def all(self, db: Reads, **params: Any) -> Sequence[Any]:
        connection = db if isinstance(db, AsyncConnection) else await db.connection()
        if connection.dialect.name != "postgresql":
            result: Sequence[Any] = (await connection.execute(self.statement, params)).all()
            return result
        sql, names, literals = self.for_postgresql(connection.dialect)
        args = [params[name] if name in params else literals[name] for name in names]
        driver: Any = (await connection.get_raw_connection()).driver_connection  # an asyncpg.Connection
        # SQLAlchemy's own hooks, so whatever listens to statements (the tests' statement counts, tracing) sees this
        # one too; ``context`` is what a listener keeps from before to after the statement (tracing: its span).
        sync = connection.sync_connection
        after = sync is not None and bool(sync.dispatch.after_cursor_execute)  # False unless tracing is on
        context = SimpleNamespace() if after else None
        if sync is not None:  # always, for a connection in use
            sync.dispatch.before_cursor_execute(sync, None, sql, args, context, False)
        try:
            rows: Sequence[Any] = await driver.fetch(sql, *args)
        except Exception as error:
            # What SQLAlchemy would raise: a DBAPIError, its connection invalidated if the server is gone or the
            # command timed out on the client (configure_postgresql's rule); the error handlers decide the status.
            failure = classify(error)
            lost = driver.is_closed() or (failure is not None and failure.drop_connection)
            if lost:
                if not driver.is_closed():
                    driver.terminate()  # at once: a graceful close would wait for a server that may not answer
                await connection.invalidate()
            raise DBAPIError.instance(
                sql, args, error, Exception, hide_parameters=True, connection_invalidated=lost
            ) from error
        finally:
            if after and sync is not None:
                sync.dispatch.after_cursor_execute(sync, None, sql, args, context, False)
        return rows

    async def first(self, db: Reads, **params: Any) -> Any:
        rows = await self.all(db, **params)
        return rows[0] if rows else None

    async def scalar(self, db: Reads, **params: Any) -> Any:
        row = await self.first(db, **params)
        return row[0] if row is not None else None


async def changed_rows(session: AsyncSession, statement: Executable) -> int:
    """Run an INSERT, UPDATE or DELETE and say how many rows it changed (0 for a conflict it ignored)."""
    result = cast(CursorResult[Any], await session.execute(statement))  # DML always gives a cursor result
    return result.rowcount


def insert_ignoring_conflicts(session: AsyncSession, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's dialect: idempotent writes without a race."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


class StringList(TypeDecorator[list[str]]):
    """The result of ``string_list``: PostgreSQL hands over a list, SQLite a JSON array; both become a list."""

    impl = String()
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str]:
        if value is None:  # array_agg over no rows
            return []
        if isinstance(value, str):
            items: list[str] = orjson.loads(value)
            return items
        return list(value)


class string_list(FunctionElement[list[str]]):
    """Aggregate a column of strings into one value: a whole list in one column of one row (e.g. an article's
    tags in its listing row, no second query). ``array_agg`` on PostgreSQL, ``json_group_array`` on SQLite."""

    type = StringList()
    inherit_cache = True


@compiles(string_list, "postgresql")
def _string_list_postgresql(element: string_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"array_agg({compiler.process(element.clauses, **kw)})"


@compiles(string_list, "sqlite")
def _string_list_sqlite(element: string_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"
