"""A database that is gone, starting, stopping, overloaded or too slow: how the service tells, says so and checks.

- ``classify`` is the one place that decides whether an error means "the database cannot serve this request right
  now" (503 ``database`` ``unavailable`` with ``Retry-After``, contract B3), or a bug (500), and whether the
  connection it happened on must be dropped rather than pooled again.
- ``DatabaseHealth`` logs a burst of such failures once: a warning when it begins, a count at most every
  ``report_every`` seconds while it lasts, one line when the database answers again. No traceback, no SQL.
- ``DatabaseProbe`` is readiness's own short check, on a connection of its own.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

logger = logging.getLogger(__name__)

# connection: unreachable, lost, starting or shutting down; resources: the server is out of connections, memory or
# disk; timeout: a bound ran out (statement, lock, pool checkout, a client-side command or connect timeout);
# conflict: a deadlock or serialization victim, rolled back, which a retry would pass; error: anything else
# (only ever reported by readiness, which fails on any error).
Kind = Literal["connection", "resources", "timeout", "conflict", "error"]

# SQLSTATE classes and codes (PostgreSQL manual, appendix A).
_CLASSES: dict[str, Kind] = {"08": "connection", "53": "resources"}
_CODES: dict[str, Kind] = {
    "57P01": "connection",  # admin_shutdown: fast shutdown, pg_terminate_backend
    "57P02": "connection",  # crash_shutdown: another backend crashed, the server restarts
    "57P03": "connection",  # cannot_connect_now: starting up, shutting down, in recovery
    "57P05": "connection",  # idle_session_timeout
    "25P03": "connection",  # idle_in_transaction_session_timeout
    "57014": "timeout",  # query_canceled: statement_timeout
    "55P03": "timeout",  # lock_not_available: lock_timeout
    "40P01": "conflict",  # deadlock_detected
    "40001": "conflict",  # serialization_failure
}
# After these the server has closed the connection (FATAL), so it must leave the pool.
_FATAL = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})
# SQLite primary result codes: BUSY and LOCKED (another writer held the lock past busy_timeout), IOERR, FULL, CANTOPEN.
_SQLITE: dict[int, Kind] = {5: "timeout", 6: "timeout", 10: "connection", 13: "resources", 14: "connection"}

REPORT_EVERY_S = 10.0
SETTLE_S = 1.0


@dataclass(frozen=True, slots=True)
class DatabaseFailure:
    """Why a request could not be served: what the log line says (never SQL, never parameters)."""

    kind: Kind
    error: str  # the driver's error class: CannotConnectNowError, ConnectionRefusedError, TimeoutError ...
    sqlstate: str | None
    detail: str  # the driver's own message, cut short
    # The connection is closed or in an unknown state (a command that timed out on the client may still be running
    # on the server): it must not go back to the pool.
    drop_connection: bool = False

    def fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "error": self.error, "sqlstate": self.sqlstate, "detail": self.detail}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy's ``orig`` (twice for asyncpg: its adapted error wraps the driver's),
    then explicit ``raise ... from`` causes (asyncpg chains a server's FATAL error to the closed connection)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _failure(kind: Kind, error: BaseException, sqlstate: str | None = None, *, drop: bool = False) -> DatabaseFailure:
    return DatabaseFailure(kind, type(error).__name__, sqlstate, str(error)[:200], drop)


def classify(exc: BaseException) -> DatabaseFailure | None:
    """The failure, if ``exc`` means the database cannot serve the request now; ``None`` for anything else (a bug,
    a constraint the caller should have handled, bad SQL): that stays a 500."""
    chain = list(_causes(exc))
    for error in chain:
        if isinstance(error, PoolTimeoutError):  # every pooled connection stayed busy for pool_timeout
            return _failure("timeout", error)
    # The deepest error with a SQLSTATE is the server's own word (asyncpg's ConnectionDoesNotExistError 08003 has
    # the FATAL 57P01 that closed it as its cause); SQLAlchemy's adapted error repeats the driver's code.
    coded = [(error, state) for error in chain if isinstance(state := getattr(error, "sqlstate", None), str)]
    if coded:
        root, sqlstate = coded[-1]
        kind = _CODES.get(sqlstate) or _CLASSES.get(sqlstate[:2])
        if kind is not None:
            return _failure(kind, root, sqlstate, drop=sqlstate in _FATAL or sqlstate.startswith("08"))
    else:
        for error in chain:
            code = getattr(error, "sqlite_errorcode", None)
            if isinstance(code, int):
                sqlite_kind = _SQLITE.get(code & 0xFF)
                return None if sqlite_kind is None else _failure(sqlite_kind, error)
            if isinstance(error, TimeoutError):  # asyncio's is the builtin (3.11): a connect or command timeout
                return _failure("timeout", error, drop=True)
            if isinstance(error, OSError):  # refused, reset, unreachable, no socket file, DNS
                return _failure("connection", error, drop=True)
            if type(error).__name__ == "InterfaceError" and "connection is closed" in str(error):
                return _failure("connection", error, drop=True)  # asyncpg, used after the server closed it
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:  # SQLAlchemy saw the connection go
        return _failure("connection", chain[-1], None, drop=True)
    return None


_DRIVERS = ("asyncpg", "aiosqlite", "sqlite3", "sqlalchemy")


def raised_by_database(exc: BaseException) -> bool:
    """Whether the error came up through a database driver or SQLAlchemy (a bare OSError from a connect does; one
    from reading a file does not, and must not be mistaken for an outage)."""
    frame = exc.__traceback__
    while frame is not None:
        if str(frame.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVERS):
            return True
        frame = frame.tb_next
    return False


def describe(exc: BaseException) -> DatabaseFailure:
    """``classify``, or a plain description of any other error (readiness fails on every error)."""
    return classify(exc) or _failure("error", exc)


class DatabaseHealth:
    """Counts database failures and logs each burst once, however many requests fail in it.

    A burst begins with the first failure (one warning: kind, error class, SQLSTATE, the driver's message). While it
    lasts, failures are counted, with one line at most every ``report_every`` seconds. It ends when the database
    answers a request and no request has failed for ``settle`` seconds: with one table locked, requests to other
    tables succeed between the failures, and the burst goes on until the failures stop. The last line says how
    many requests failed and for how long.
    """

    def __init__(
        self,
        *,
        report_every: float = REPORT_EVERY_S,
        settle: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report_every = report_every
        self.settle = settle
        self._clock = clock
        self.failing = False
        self.failed_count = 0  # in the current (or last) burst
        self._unreported = 0
        self._began = self._last_failure = self._last_line = 0.0

    def failed(self, failure: DatabaseFailure) -> None:
        now = self._clock()
        self._last_failure = now
        if not self.failing:
            self.failing = True
            self.failed_count, self._unreported = 1, 0
            self._began = self._last_line = now
            logger.warning("database unavailable: requests get 503", extra=failure.fields())
            return
        self.failed_count += 1
        self._unreported += 1
        if now - self._last_line >= self.report_every:
            logger.warning(
                "database still unavailable",
                extra={
                    **failure.fields(),
                    "failed": self.failed_count,
                    "failed_since_last_report": self._unreported,
                    "seconds": round(now - self._began, 1),
                },
            )
            self._last_line, self._unreported = now, 0

    def answered(self) -> None:
        """The database served a request (cheap when healthy: called at the end of every request's transaction)."""
        if self.failing:
            self._maybe_recovered()

    def _maybe_recovered(self) -> None:
        now = self._clock()
        if now - self._last_failure < self.settle:
            return
        self.failing = False
        logger.info(
            "database available again",
            extra={"failed": self.failed_count, "seconds": round(self._last_failure - self._began, 1)},
        )


class DatabaseProbe:
    """Readiness's own check: ``SELECT 1`` on a connection that is not the request pool's, so a busy pool cannot make
    a healthy instance look dead, answered within ``timeout`` whatever the database does (even nothing at all).

    Concurrent checks share one round trip. A check that runs out of time leaves its round trip to finish in the
    background, bounded by the connection's own timeouts, so the answer never waits for a connection to close.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        timeout: float,
        *,
        dispose: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._connect = connect
        self.timeout = timeout
        self._dispose = dispose
        self._running: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Return if the database answered, else raise (``TimeoutError`` past the timeout)."""
        task = self._running
        if task is None or task.done():
            task = self._running = asyncio.create_task(self._select_one())
            task.add_done_callback(_consume)
        async with asyncio.timeout(self.timeout):
            await asyncio.shield(task)

    async def _select_one(self) -> None:
        async with self._connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        task, self._running = self._running, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._dispose is not None:
            await self._dispose()


def _consume(task: "asyncio.Task[None]") -> None:
    """Retrieve the result of a probe nobody waited for any more, so asyncio logs no "never retrieved" traceback."""
    if not task.cancelled():
        task.exception()
