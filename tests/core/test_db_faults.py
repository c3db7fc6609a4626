"""Real database faults, on a PostgreSQL of the test's own (tests/postgres_instance.py): stopped (fast and immediate
shutdown) under load, starting up and shutting down, a held lock, more clients than the pool, a paused server.

What must hold (issue 14): every request answers, within a bound the settings give, with 200/201 or the clean 503
(``{"errors": {"database": ["unavailable"]}}`` and ``Retry-After``), never a 500; readiness turns 503 within about
its timeout while liveness stays 200; the service recovers by itself and the first request after recovery
succeeds; a write during the outage is all or nothing; the log says it once per burst, without a traceback.

The app runs with small timeouts (``FAST``); the bounds asserted are generous multiples of them.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import text

from service.articles import counters
from service.core import migrations
from service.core.config import Settings, load_settings
from service.core.db import Database, create_engine_for
from service.core.db_health import DatabaseHealth
from service.main import create_app
from tests.conftest import BACKENDS, IN_CI
from tests.helpers import article_payload, auth, register
from tests.postgres_instance import PostgresInstance, unavailable_reason

pytestmark = pytest.mark.xdist_group("postgres_faults")  # one private server per worker that runs any of these

RETRY_AFTER = 3  # not the default (5): the header comes from the setting
FAST: dict[str, Any] = {
    "database_pool_size": 4,
    "database_max_overflow": 0,
    "database_connect_timeout": 1.0,
    "database_pool_timeout": 0.5,
    "database_statement_timeout": 2.0,
    "database_lock_timeout": 0.5,
    "database_command_timeout": 1.5,
    "readiness_timeout": 1.0,
    "database_retry_after": RETRY_AFTER,
}
LIVE_BOUND = 1.0
HARD_LIMIT = 30.0  # a request still unanswered after this is a hang: fail instead of waiting forever
UNAVAILABLE = {"errors": {"database": ["unavailable"]}}


def request_bound(settings: Settings) -> float:
    """The longest a request may take under any fault: wait for a pooled connection, open a new one, run a command
    (each bounded by its setting), doubled for a noisy machine."""
    worst = settings.database_pool_timeout + settings.database_connect_timeout + settings.database_command_timeout
    return 2 * worst.total_seconds()


def ready_bound(settings: Settings) -> float:
    return 2 * settings.readiness_timeout.total_seconds() + 0.5


@pytest.fixture(scope="module")
async def pg(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PostgresInstance]:
    if "postgresql" not in BACKENDS:
        pytest.skip("PostgreSQL is not among SERVICE_TEST_DATABASES")
    reason = unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    instance = await PostgresInstance.create(tmp_path_factory.mktemp("pg-faults"))
    try:
        await instance.start()
        await asyncio.to_thread(migrations.upgrade, instance.url)
        yield instance
    finally:
        await instance.destroy()


@pytest.fixture
async def server(pg: PostgresInstance) -> PostgresInstance:
    await pg.ensure_running()  # whatever an earlier (failed) test left behind
    return pg


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


@dataclass
class Served:
    api: AsyncClient  # http://t/api
    root: AsyncClient  # http://t (health)
    state: dict[str, Any]
    settings: Settings
    logs: LogRecorder

    @property
    def database(self) -> Database:
        database: Database = self.state["database"]
        return database


@asynccontextmanager
async def served(pg: PostgresInstance, **overrides: Any) -> AsyncIterator[Served]:
    """The app with its real lifespan (request pool, readiness probe) on ``pg``, and its log recorded."""
    settings = load_settings(
        environment="test", database_url=pg.url, log_format="json", rate_limits_enabled=False, **{**FAST, **overrides}
    )
    app = create_app(settings)  # configures logging: attach the recorder after it
    logs = LogRecorder()
    logging.getLogger().addHandler(logs)
    try:
        async with app.router.lifespan_context(app) as lifespan_state:
            state: dict[str, Any] = dict(lifespan_state or {})

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                scope["state"] = dict(state)
                await app(scope, receive, send)

            transport = ASGITransport(app=with_state)
            async with (
                AsyncClient(transport=transport, base_url="http://t/api") as api,
                AsyncClient(transport=transport, base_url="http://t") as root,
            ):
                yield Served(api, root, state, settings, logs)
    finally:
        logging.getLogger().removeHandler(logs)
    # Never a traceback, whatever failed: not from the service, the pool, asyncpg or asyncio.
    assert [r.getMessage() for r in logs.records if r.exc_info] == []
    assert [r.getMessage() for r in logs.records if "Traceback" in r.getMessage()] == []


async def timed(request: Awaitable[Response]) -> tuple[Response, float]:
    started = time.perf_counter()
    response = await asyncio.wait_for(request, HARD_LIMIT)
    return response, time.perf_counter() - started


def assert_unavailable(response: Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == UNAVAILABLE
    assert response.headers["Retry-After"] == str(RETRY_AFTER)


def assert_not_ready(response: Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
    assert response.headers["Retry-After"] == str(RETRY_AFTER)


_titles = itertools.count(1)


def new_article(tag: str) -> dict[str, Any]:
    return {"article": article_payload(title=f"Fault {tag} {next(_titles)}", tagList=[tag])}


async def titles_with_tag(pg: PostgresInstance, tag: str) -> set[str]:
    connection = await pg.connect()
    try:
        rows = await connection.fetch(
            "SELECT a.title FROM articles a JOIN article_tags at ON at.article_id = a.id "
            "JOIN tags t ON t.id = at.tag_id WHERE t.name = $1",
            tag,
        )
    finally:
        await connection.close()
    return {row["title"] for row in rows}


async def counters_differ(pg: PostgresInstance) -> list[counters.Difference]:
    engine = create_engine_for(pg.url)
    try:
        async with engine.connect() as connection:
            return await counters.differences(connection)
    finally:
        await engine.dispose()


@dataclass
class Outcome:
    kind: str  # read, tags, write
    status: int
    started: float
    seconds: float
    title: str | None = None
    body: Any = None
    retry_after: str | None = None


@dataclass
class Load:
    """Clients that keep sending reads, tag reads and writes until stopped; every answer is kept."""

    client: AsyncClient
    token: str
    tag: str
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list["asyncio.Task[None]"] = field(default_factory=list)

    def start(self, clients: int) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, index: int) -> None:
        for turn in itertools.count(index):
            if self._stop.is_set():
                return
            kind = ("read", "tags", "write")[turn % 3]
            title = None
            started = time.perf_counter()
            if kind == "read":
                request = self.client.get("/articles")
            elif kind == "tags":
                request = self.client.get("/tags")
            else:
                payload = new_article(self.tag)
                title = payload["article"]["title"]
                request = self.client.post("/articles", json=payload, headers=auth(self.token))
            response, seconds = await timed(request)
            body = response.json() if response.status_code >= 400 else None
            outcome = Outcome(kind, response.status_code, started, seconds, title, body)
            outcome.retry_after = response.headers.get("Retry-After")
            self.outcomes.append(outcome)
            await asyncio.sleep(0.01)

    async def finish(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


def assert_clean(outcomes: list[Outcome], bound: float) -> None:
    """Every answer is a success or the clean 503, in bounded time; never a 500."""
    for outcome in outcomes:
        assert outcome.status in (200, 201, 503), outcome
        assert outcome.seconds <= bound, outcome
        if outcome.status == 503:
            assert outcome.body == UNAVAILABLE, outcome
            assert outcome.retry_after == str(RETRY_AFTER), outcome


def extra(record: logging.LogRecord, name: str) -> Any:
    """A field the service logged with ``extra=``."""
    return record.__dict__[name]


def burst_lines(logs: LogRecorder) -> tuple[list[logging.LogRecord], list[logging.LogRecord]]:
    return logs.named("database unavailable: requests get 503"), logs.named("database available again")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_stopped_database_is_a_clean_503_and_the_first_request_after_it_returns_succeeds(
    server: PostgresInstance, mode: str
) -> None:
    tag = f"stop-{mode}"
    async with served(server) as app:
        app.database.health.settle = 0.2  # the burst ends on a success this long after the last failure
        token = (await register(app.api))["token"]
        load = Load(app.api, token, tag)
        load.start(clients=6)
        await asyncio.sleep(0.4)  # requests in flight when the server goes
        await server.stop(mode)
        down = time.perf_counter()
        await asyncio.sleep(0.4)  # and while it is down
        ready, ready_s = await timed(app.root.get("/health/ready"))
        live, live_s = await timed(app.root.get("/health/live"))
        outcomes = await load.finish()

        bound = request_bound(app.settings)
        assert_clean(outcomes, bound)
        assert {o.status for o in outcomes if o.started < down} & {200, 201}  # the load did run before
        during = [o for o in outcomes if o.started >= down]
        assert during
        assert {o.status for o in during} == {503}
        assert_not_ready(ready)
        assert ready_s <= ready_bound(app.settings)
        assert live.status_code == 200
        assert live_s <= LIVE_BOUND

        failed = sum(o.status == 503 for o in outcomes) + 1  # and the readiness check
        if mode == "immediate":  # requests while it is starting up (crash recovery first): 503 until it answers
            await server.start(wait=False)
            async with asyncio.timeout(HARD_LIMIT):
                while True:
                    response, seconds = await timed(app.api.get("/articles"))
                    assert seconds <= bound
                    if response.status_code == 200:
                        break
                    assert_unavailable(response)
                    failed += 1
                    await asyncio.sleep(0.02)
        else:
            await server.start()
            first = await app.api.get("/articles")  # the very first request after the database is back
            assert first.status_code == 200, first.text

        await asyncio.sleep(0.25)  # past the settling time: the next success ends the burst
        written = await app.api.post("/articles", json=new_article(tag), headers=auth(token))
        assert written.status_code == 201, written.text
        assert (await app.root.get("/health/ready")).status_code == 200

        # All or nothing: every 201 is there, and nothing else is but a write whose answer was lost with the server.
        created = {o.title for o in outcomes if o.kind == "write" and o.status == 201}
        unanswered = {o.title for o in outcomes if o.kind == "write" and o.status == 503 and o.started < down}
        stored = await titles_with_tag(server, tag) - {written.json()["article"]["title"]}
        assert created <= stored <= created | unanswered
        assert await counters_differ(server) == []

        # Said once: one warning when it began, one line when it ended, counting every 503 in between.
        began, ended = burst_lines(app.logs)
        assert len(began) == 1
        assert len(ended) == 1
        assert extra(ended[0], "failed") == failed
        assert len(app.logs.named("database still unavailable")) <= 1
        assert {r.name for r in app.logs.records if r.levelno >= logging.WARNING} <= {"service.core.db_health"}


async def test_starting_up_and_shutting_down_are_a_clean_503(server: PostgresInstance) -> None:
    async with served(server) as app:
        app.database.health.settle = 0.0
        token = (await register(app.api))["token"]
        await server.stop("fast")

        # Starting up: a standby with hot_standby off refuses every connection with 57P03 until promoted.
        await server.start_standby()
        for request in (
            app.api.get("/articles"),
            app.api.post("/articles", json=new_article("standby"), headers=auth(token)),
        ):
            response, seconds = await timed(request)
            assert_unavailable(response)
            assert seconds <= request_bound(app.settings)
        ready, ready_s = await timed(app.root.get("/health/ready"))
        assert_not_ready(ready)
        assert ready_s <= ready_bound(app.settings)
        began, _ = burst_lines(app.logs)
        assert [(extra(r, "error"), extra(r, "sqlstate")) for r in began] == [("CannotConnectNowError", "57P03")]

        await server.promote()  # recovery ends: no restart of the app, and its first request succeeds
        assert (await app.api.get("/articles")).status_code == 200
        assert (await app.api.post("/articles", json=new_article("standby"), headers=auth(token))).status_code == 201

        # Shutting down: a smart shutdown waits for the sessions it has and refuses new ones with 57P03.
        holder = await server.connect()
        try:
            await server.stop("smart", wait=False)
            async with asyncio.timeout(HARD_LIMIT):
                while True:  # until the server has taken the signal
                    await app.state["engine"].dispose()  # pooled sessions would go on: this request needs a new one
                    response = await app.api.get("/tags")
                    if response.status_code != 200:
                        break
                    await asyncio.sleep(0.02)
            assert_unavailable(response)
            assert extra(app.logs.named("database unavailable: requests get 503")[-1], "sqlstate") == "57P03"
        finally:
            await holder.close()
        await server.wait_stopped()
        assert_unavailable(await app.api.get("/tags"))
        await server.start()
        assert (await app.api.get("/tags")).status_code == 200
        assert len(await titles_with_tag(server, "standby")) == 1  # the write refused while starting left nothing


@pytest.mark.parametrize(
    ("timeouts", "sqlstate"),
    [
        ({"database_lock_timeout": 0.5, "database_statement_timeout": 5.0}, "55P03"),
        ({"database_lock_timeout": 0, "database_statement_timeout": 0.5}, "57014"),
    ],
    ids=["lock_timeout", "statement_timeout"],
)
async def test_a_held_lock_is_a_503_within_the_timeout_and_spares_other_tables(
    server: PostgresInstance, timeouts: dict[str, float], sqlstate: str
) -> None:
    tag = f"lock-{sqlstate.lower()}"
    async with served(server, database_pool_size=3, database_pool_timeout=0.3, **timeouts) as app:
        app.database.health.settle = 5.0  # other tables' successes between the failures do not end the burst
        token = (await register(app.api))["token"]
        slug = (await app.api.post("/articles", json=new_article(tag), headers=auth(token))).json()["article"]["slug"]
        bound = 3 * 0.5 + 1.0  # the lock or statement timeout that runs out, x3, and a second
        async with server.holding_lock("articles"):
            for request in (
                app.api.get("/articles"),
                app.api.get(f"/articles/{slug}"),
                app.api.post("/articles", json=new_article(tag), headers=auth(token)),
            ):
                response, seconds = await timed(request)
                assert_unavailable(response)
                assert seconds <= bound
            began, _ = burst_lines(app.logs)
            assert [extra(r, "sqlstate") for r in began] == [sqlstate]

            # What does not read the locked table still answers, and so does readiness (its own connection).
            assert (await app.api.get("/tags")).status_code == 200
            ready, ready_s = await timed(app.root.get("/health/ready"))
            assert ready.status_code == 200
            assert ready_s <= ready_bound(app.settings)

            # More clients than the pool holds: those that get no connection give up after pool_timeout.
            crowd = await asyncio.gather(*(timed(app.api.get(f"/articles/{slug}")) for _ in range(10)))
            for response, seconds in crowd:
                assert_unavailable(response)
                assert seconds <= bound + app.settings.database_pool_timeout.total_seconds()

        # Released: the pool is whole again, every request succeeds.
        crowd = await asyncio.gather(*(timed(app.api.get(f"/articles/{slug}")) for _ in range(10)))
        assert [response.status_code for response, _ in crowd] == [200] * 10
        assert (await app.api.post("/articles", json=new_article(tag), headers=auth(token))).status_code == 201
        assert len(await titles_with_tag(server, tag)) == 2  # the write refused under the lock left nothing
        assert len(burst_lines(app.logs)[0]) == 1


async def test_a_paused_database_is_a_503_within_the_bound_and_everything_works_after(
    server: PostgresInstance,
) -> None:
    tag = "paused"
    async with served(server, database_pool_size=3) as app:
        app.database.health.settle = 0.0
        token = (await register(app.api))["token"]
        for _ in range(3):
            assert (await app.api.get("/articles")).status_code == 200  # pooled connections, open and idle
        bound = request_bound(app.settings)
        with server.paused():
            for wave in range(2):  # first on the pooled connections, then on new ones the server never answers
                api = [
                    *(timed(app.api.get("/articles")) for _ in range(5)),
                    timed(app.api.post("/articles", json=new_article(tag), headers=auth(token))),
                    timed(app.api.get("/tags")),
                ]
                ready_request = timed(app.root.get("/health/ready"))
                live_request = timed(app.root.get("/health/live"))
                *answers, (ready, ready_s), (live, live_s) = await asyncio.gather(*api, ready_request, live_request)
                for response, seconds in answers:
                    assert_unavailable(response)
                    assert seconds <= bound, (wave, seconds)
                assert_not_ready(ready)
                assert ready_s <= ready_bound(app.settings)
                assert live.status_code == 200
                assert live_s <= LIVE_BOUND
        first = await app.api.get("/articles")  # resumed: the first request succeeds
        assert first.status_code == 200, first.text
        assert (await app.api.post("/articles", json=new_article(tag), headers=auth(token))).status_code == 201
        assert (await app.root.get("/health/ready")).status_code == 200
        assert len(await titles_with_tag(server, tag)) == 1  # the writes that got 503 left nothing behind
        assert await counters_differ(server) == []
        began, ended = burst_lines(app.logs)
        assert len(began) == 1
        assert len(ended) == 1


async def test_readiness_does_not_queue_behind_a_busy_pool(server: PostgresInstance) -> None:
    """Readiness answers while every pooled connection is busy (it used to queue behind them)."""
    async with served(server, database_pool_size=2, database_pool_timeout=5.0) as app:
        engine = app.state["engine"]
        held = [await engine.connect() for _ in range(2)]  # the whole pool, busy
        try:
            for connection in held:
                await connection.execute(text("SELECT 1"))
            ready, ready_s = await timed(app.root.get("/health/ready"))
        finally:
            for connection in held:
                await connection.close()
        assert ready.status_code == 200
        assert ready_s <= ready_bound(app.settings)
        assert isinstance(app.database.health, DatabaseHealth)
        assert not app.database.health.failing
