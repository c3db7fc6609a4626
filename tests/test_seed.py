"""``service seed``: counts, reproducibility, repeated runs, and data the API serves consistently.

The seed commits through its own connections, so these tests do not use the rolled-back ``sessionmaker``: each one
gets fresh, migrated databases (a SQLite file, or a PostgreSQL database of its own, dropped afterwards).
"""

import asyncio
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from service.articles import counters
from service.cli import app as cli_app
from service.core import migrations
from service.core.config import get_settings, load_settings
from service.core.db import build_database, create_engine_for
from service.main import create_app
from service.seed import SeedError, SeedOptions, SeedReport, _skip_foreign_key_checks, seed
from tests.conftest import BACKENDS, create_postgres_database, drop_postgres_database
from tests.helpers import serving

EngineFactory = Callable[..., Awaitable[AsyncEngine]]
SMALL = SeedOptions(users=30, articles=120, tags=20, seed=7, batch_size=50)  # several batches per table
TINY = SeedOptions(users=12, articles=40, tags=10, seed=5, batch_size=16)
USERNAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


@pytest.fixture(params=BACKENDS)
async def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Engines on new databases, migrated unless ``migrated=False``; disposed and dropped at the end."""
    backend: str = request.param
    engines: list[AsyncEngine] = []
    databases: list[str] = []

    async def make(*, migrated: bool = True) -> AsyncEngine:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / f'seed_{len(engines)}.db'}"
        else:
            name, url = await create_postgres_database("conduit_seed")
            databases.append(name)
        if migrated:
            await asyncio.to_thread(migrations.upgrade, url)  # env.py calls asyncio.run(): keep it off this loop
        engine = create_engine_for(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.dispose()
    for name in databases:
        await drop_postgres_database(name)


async def _rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


async def _count(engine: AsyncEngine, table: str) -> int:
    return int((await _rows(engine, f"SELECT count(*) FROM {table}"))[0][0])  # noqa: S608 - fixed names


async def _snapshot(engine: AsyncEngine) -> dict[str, list[Any]]:
    return {
        "users": await _rows(engine, "SELECT id, username, email, bio, created_at FROM users ORDER BY id"),
        "articles": await _rows(engine, "SELECT id, slug, title, author_id, created_at FROM articles ORDER BY id"),
        "tags": await _rows(
            engine,
            "SELECT a.slug, t.name FROM article_tags at JOIN articles a ON a.id = at.article_id "
            "JOIN tags t ON t.id = at.tag_id ORDER BY a.slug, t.name",
        ),
        "follows": await _rows(engine, "SELECT follower_id, followee_id FROM follows ORDER BY 1, 2"),
        "favorites": await _rows(engine, "SELECT user_id, article_id FROM favorites ORDER BY 1, 2"),
        "comments": await _rows(engine, "SELECT article_id, author_id, body FROM comments ORDER BY id"),
    }


async def _assert_consistent(engine: AsyncEngine) -> None:
    """Invariants every seeded database keeps, whatever was in it before."""
    assert await _rows(engine, "SELECT 1 FROM follows WHERE follower_id = followee_id") == []
    # ids grow with created_at, so (created_at, id) ordering is creation order
    out_of_order = await _rows(
        engine, "SELECT count(*) FROM articles a JOIN articles b ON a.id < b.id AND a.created_at > b.created_at"
    )
    assert out_of_order[0][0] == 0
    for table in ("users", "articles", "comments"):
        assert await _rows(engine, f"SELECT id FROM {table} WHERE updated_at < created_at") == []  # noqa: S608
    per_article = await _rows(engine, "SELECT count(*) FROM article_tags GROUP BY article_id ORDER BY 1 DESC LIMIT 1")
    assert not per_article or per_article[0][0] <= 5
    users = await _rows(engine, "SELECT username, email FROM users")
    assert all(USERNAME.match(name) for name, _ in users)
    assert all(email == email.lower() for _, email in users)
    assert len({name.lower() for name, _ in users}) == len(users)
    assert len({email for _, email in users}) == len(users)
    # on PostgreSQL the bulk load may skip the foreign-key triggers: the references must hold all the same
    orphans = {
        "article_tags": "SELECT count(*) FROM article_tags x LEFT JOIN articles a ON a.id = x.article_id "
        "LEFT JOIN tags t ON t.id = x.tag_id WHERE a.id IS NULL OR t.id IS NULL",
        "articles": "SELECT count(*) FROM articles x LEFT JOIN users u ON u.id = x.author_id WHERE u.id IS NULL",
        "follows": "SELECT count(*) FROM follows x LEFT JOIN users a ON a.id = x.follower_id "
        "LEFT JOIN users b ON b.id = x.followee_id WHERE a.id IS NULL OR b.id IS NULL",
        "favorites": "SELECT count(*) FROM favorites x LEFT JOIN users u ON u.id = x.user_id "
        "LEFT JOIN articles a ON a.id = x.article_id WHERE u.id IS NULL OR a.id IS NULL",
        "comments": "SELECT count(*) FROM comments x LEFT JOIN users u ON u.id = x.author_id "
        "LEFT JOIN articles a ON a.id = x.article_id WHERE u.id IS NULL OR a.id IS NULL",
    }
    for table, sql in orphans.items():
        assert (await _rows(engine, sql))[0][0] == 0, table
    comments_before_article = await _rows(
        engine, "SELECT c.id FROM comments c JOIN articles a ON a.id = c.article_id WHERE c.created_at < a.created_at"
    )
    assert comments_before_article == []


async def test_seed_inserts_the_requested_rows(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    report = await seed(engine, SMALL)

    assert report.counts["users"] == await _count(engine, "users") == SMALL.users
    assert report.counts["articles"] == await _count(engine, "articles") == SMALL.articles
    assert report.counts["tags"] == await _count(engine, "tags") == SMALL.tags
    for table in ("article_tags", "follows", "favorites", "comments"):
        assert report.counts[table] == await _count(engine, table) > 0, table
    # averages are averages: within a generous band of what was asked for
    assert SMALL.articles * SMALL.comments_per_article * 0.6 < report.counts["comments"]
    assert report.counts["comments"] < SMALL.articles * SMALL.comments_per_article * 1.4
    assert (
        SMALL.users * SMALL.follows_per_user * 0.5
        < report.counts["follows"]
        < SMALL.users * SMALL.follows_per_user * 1.5
    )
    assert report.counts["favorites"] < SMALL.users * SMALL.favorites_per_user * 1.5
    assert report.password == SMALL.password
    assert report.sample_email is not None
    assert report.elapsed > 0
    await _assert_consistent(engine)
    # one shared hash, computed once
    assert len(await _rows(engine, "SELECT DISTINCT password_hash FROM users")) == 1


async def test_same_seed_on_empty_databases_gives_the_same_data(make_engine: EngineFactory) -> None:
    first, second, other = await make_engine(), await make_engine(), await make_engine()
    await seed(first, SMALL)
    await seed(second, SeedOptions(**{**_fields(SMALL), "batch_size": 7}))  # batching does not change the data
    await seed(other, SeedOptions(**{**_fields(SMALL), "seed": 8}))

    snapshot = await _snapshot(first)
    assert snapshot == await _snapshot(second)
    assert snapshot["articles"] != (await _snapshot(other))["articles"]


def _fields(options: SeedOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in SeedOptions.__dataclass_fields__}


async def test_second_run_adds_rows(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    first = await seed(engine, SMALL)
    second = await seed(engine, SMALL)  # the same seed again: names, slugs and ids must still not collide

    assert second.counts["tags"] == 0  # the vocabulary exists already
    assert await _count(engine, "users") == 2 * SMALL.users
    assert await _count(engine, "articles") == 2 * SMALL.articles
    for table in ("article_tags", "follows", "favorites", "comments"):
        assert await _count(engine, table) == first.counts[table] + second.counts[table]
    await _assert_consistent(engine)


async def _counter_differences(engine: AsyncEngine) -> list[counters.Difference]:
    async with engine.connect() as conn:
        return await counters.differences(conn)


async def test_seeded_counters_are_exact_after_every_run(make_engine: EngineFactory) -> None:
    """The bulk load bypasses the service's increments: the recount at its end must leave every counter exact,
    on an empty database and on one seeded already (whose counters must take the new rows in too)."""
    engine = await make_engine()
    first = await seed(engine, TINY)
    assert await _counter_differences(engine) == []
    assert (await _rows(engine, "SELECT value FROM counters WHERE name = 'articles'"))[0][0] == TINY.articles
    assert (await _rows(engine, "SELECT sum(favorites_count) FROM articles"))[0][0] == first.counts["favorites"] > 0

    second = await seed(engine, TINY)
    assert await _counter_differences(engine) == []
    assert (await _rows(engine, "SELECT value FROM counters WHERE name = 'articles'"))[0][0] == 2 * TINY.articles
    tagged = (await _rows(engine, "SELECT sum(articles_count) FROM tags"))[0][0]
    assert tagged == first.counts["article_tags"] + second.counts["article_tags"]
    favorited = (await _rows(engine, "SELECT sum(favorited_count) FROM users"))[0][0]
    assert favorited == first.counts["favorites"] + second.counts["favorites"]


async def test_seeded_data_is_served_consistently(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    report = await seed(engine, SMALL)
    settings = load_settings(
        environment="test", database_url=engine.url.render_as_string(hide_password=False), log_format="json"
    )
    app = serving(create_app(settings), build_database(engine))

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as client:
        login = await client.post(
            "/users/login", json={"user": {"email": report.sample_email, "password": "password123"}}
        )
        assert login.status_code == 200, login.text
        assert login.json()["user"]["token"]
        wrong = await client.post(
            "/users/login", json={"user": {"email": report.sample_email, "password": "nope-nope"}}
        )
        assert wrong.status_code == 401

        response = await client.get("/articles", params={"limit": 50})
        assert response.status_code == 200
        body = response.json()
        assert body["articlesCount"] == SMALL.articles
        served = {a["slug"]: a for a in body["articles"]}
        assert len(served) == 50

        # identity sequences were moved past the explicit ids: the API can still create rows
        created = await client.post(
            "/users",
            json={"user": {"username": "after_seed", "email": "after-seed@example.com", "password": "password123"}},
        )
        assert created.status_code == 201, created.text

    authors = dict(await _rows(engine, "SELECT a.slug, u.username FROM articles a JOIN users u ON u.id = a.author_id"))
    favorites = dict(
        await _rows(
            engine,
            "SELECT a.slug, count(f.user_id) FROM articles a "
            "LEFT JOIN favorites f ON f.article_id = a.id GROUP BY a.slug",
        )
    )
    tags: dict[str, list[str]] = {}
    for slug, name in await _rows(
        engine,
        "SELECT a.slug, t.name FROM article_tags at JOIN articles a ON a.id = at.article_id "
        "JOIN tags t ON t.id = at.tag_id",
    ):
        tags.setdefault(slug, []).append(name)
    newest = await _rows(engine, "SELECT slug FROM articles ORDER BY created_at DESC, id DESC LIMIT 50")
    assert list(served) == [slug for (slug,) in newest]
    for slug, article in served.items():
        assert article["author"]["username"] == authors[slug]
        assert sorted(article["tagList"]) == sorted(tags.get(slug, []))
        assert article["favoritesCount"] == favorites[slug]
    assert any(article["tagList"] for article in served.values())
    assert any(article["favoritesCount"] for article in served.values())


async def test_foreign_key_checks_are_kept_for_a_plain_role(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    if engine.dialect.name != "postgresql":
        pytest.skip("replica mode is PostgreSQL's")
    role = f"seed_plain_{uuid.uuid4().hex[:8]}"
    async with engine.connect() as conn:  # everything here is rolled back, the role included
        await conn.execute(text(f'CREATE ROLE "{role}"'))
        await conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        assert await _skip_foreign_key_checks(conn) is False
        assert (await conn.execute(text("SHOW session_replication_role"))).scalar_one() == "origin"
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1  # the refusal did not abort the transaction
        await conn.rollback()
    async with engine.connect() as conn:
        assert await _skip_foreign_key_checks(conn) is True  # the test suite connects as a superuser
        await conn.execute(text("CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"))
        await conn.execute(text("CREATE TRIGGER t_noop BEFORE INSERT ON comments FOR EACH ROW EXECUTE FUNCTION noop()"))
        assert await _skip_foreign_key_checks(conn) is False  # replica mode would silence a trigger of our own
        await conn.rollback()


async def test_seed_refuses_an_unmigrated_database(make_engine: EngineFactory) -> None:
    engine = await make_engine(migrated=False)
    with pytest.raises(SeedError, match="service migrate"):
        await seed(engine, SMALL)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"users": -1}, "users"),
        ({"users": 0, "articles": 5}, "authors"),
        ({"comments_per_article": float("nan")}, "comments_per_article"),
        ({"batch_size": 0}, "batch_size"),
        ({"password": "short"}, "password"),
    ],
)
def test_options_are_validated(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SeedOptions(**changes)


def test_report_rates() -> None:
    report = SeedReport({"users": 10, "articles": 30}, {"users": 0.5, "articles": 1.0}, 2.0, "password123", None)
    assert report.total == 40
    assert report.rows_per_second == 20.0


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    database = tmp_path / "cli.db"
    monkeypatch.setenv("SERVICE_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("SERVICE_ENVIRONMENT", "test")
    monkeypatch.setenv("SERVICE_SECRET_KEY", "x" * 48)
    get_settings.cache_clear()
    yield database
    get_settings.cache_clear()


def test_cli_seed_fills_a_migrated_database(cli_env: Path) -> None:
    runner = CliRunner()
    migrated = runner.invoke(cli_app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output

    result = runner.invoke(cli_app, ["seed", "--users", "5", "--articles", "20"])

    assert result.exit_code == 0, result.output
    assert "password123" in result.output
    assert "articles" in result.output
    with sqlite3.connect(cli_env) as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (5,)
        assert db.execute("SELECT count(*) FROM articles").fetchone() == (20,)


def test_cli_seeded_database_passes_counters_check(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["migrate"]).exit_code == 0
    assert runner.invoke(cli_app, ["seed", "--users", "5", "--articles", "20", "-q"]).exit_code == 0

    result = runner.invoke(cli_app, ["counters", "check"])

    assert result.exit_code == 0, result.output
    assert "every counter matches a recount" in result.output
    with sqlite3.connect(cli_env) as db:
        assert db.execute("SELECT value FROM counters WHERE name = 'articles'").fetchone() == (20,)


def test_cli_seed_asks_for_migrate_first(cli_env: Path) -> None:
    result = CliRunner().invoke(cli_app, ["seed", "--users", "2", "--articles", "2"])
    assert result.exit_code == 1
    assert "service migrate" in result.output


def test_cli_seed_refuses_production_without_force(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_ENVIRONMENT", "production")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, ["seed", "--users", "2", "--articles", "2"])
    assert result.exit_code == 1
    assert "production" in result.output
    assert not cli_env.exists()  # nothing was touched
