"""Engine, sessions (one transaction per request) and the declarative base."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import BigInteger, Connection, DateTime, Dialect, Integer, MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from service.core.config import Settings

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


def create_engine_for(url: str, **kwargs: Any) -> AsyncEngine:
    """The one place that builds an engine, so the app, Alembic, the CLI and tests get the same dialect setup."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, **kwargs)
        configure_sqlite(engine)
        return engine
    return create_async_engine(url, **kwargs)


def build_engine(settings: Settings) -> AsyncEngine:
    # hide_parameters: a logged database error shows the SQL, never the values (e-mails, bodies, hashes).
    if settings.is_sqlite:
        return create_engine_for(settings.database_url, echo=settings.database_echo, hide_parameters=True)
    return create_engine_for(
        settings.database_url,
        echo=settings.database_echo,
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
    )


def build_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)  # responses read attributes after commit


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:  # tests override this
    maker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return maker


_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(
    request: Request,
    sessionmaker: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        if request.method not in _READ_ONLY_METHODS:
            await session.connection(execution_options={WRITE_INTENT: True})
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit runs before the response is sent, so a failed commit becomes an error response.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def insert_ignoring_conflicts(session: AsyncSession, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's dialect: idempotent writes without a race."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
