"""``service counters check`` and ``service counters rebuild`` on a database of their own, on each backend.

The commands read ``SERVICE_DATABASE_URL`` and commit through their own engines, so each test gets a fresh,
migrated database (a SQLite file, or a PostgreSQL database dropped afterwards), filled over HTTP. The commands run
``asyncio.run`` inside, so they are invoked in a thread, off the test's event loop.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner, Result

from service.articles import counters
from service.cli import app as cli_app
from service.core import migrations
from service.core.config import get_settings, load_settings
from service.core.db import build_database, create_engine_for
from service.main import create_app
from tests.conftest import BACKENDS, create_postgres_database, drop_postgres_database
from tests.helpers import create_article, favorite, register, serving

ALL_WELL = "every counter matches a recount"


@pytest.fixture(params=BACKENDS)
async def cli_engine(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsyncEngine]:
    """A migrated database the CLI is pointed at, holding two users, three articles, tags and favorites."""
    name: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'counters_cli.db'}"
    else:
        name, url = await create_postgres_database("conduit_counters_cli")
    await asyncio.to_thread(migrations.upgrade, url)  # env.py calls asyncio.run(): keep it off this loop
    monkeypatch.setenv("SERVICE_DATABASE_URL", url)
    monkeypatch.setenv("SERVICE_ENVIRONMENT", "test")
    monkeypatch.setenv("SERVICE_SECRET_KEY", "k" * 48)
    get_settings.cache_clear()
    engine = create_engine_for(url)
    settings = load_settings(environment="test", database_url=url, log_format="json")
    app = serving(create_app(settings), build_database(engine))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as client:
        alice, bob = await register(client), await register(client)
        first = await create_article(client, alice["token"], tagList=["cli", "counters"])
        await create_article(client, alice["token"], tagList=["cli"])
        await create_article(client, bob["token"])
        await favorite(client, bob["token"], first["slug"])
    try:
        yield engine
    finally:
        await engine.dispose()
        get_settings.cache_clear()
        if name is not None:
            await drop_postgres_database(name)


async def invoke(*args: str) -> Result:
    """``service counters ARGS...``, in a thread."""

    def run() -> Result:
        return CliRunner().invoke(cli_app, ["counters", *args])

    return await asyncio.to_thread(run)


async def execute(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def scalar(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_check_lists_the_differences_and_rebuild_fixes_them(cli_engine: AsyncEngine) -> None:
    consistent = await invoke("check")  # what the API wrote is exact
    assert consistent.exit_code == 0, consistent.output
    assert ALL_WELL in consistent.output
    assert "stored" not in consistent.output

    tag_id = await scalar(cli_engine, "SELECT id FROM tags WHERE name = 'cli'")
    article_id = await scalar(cli_engine, "SELECT article_id FROM favorites")
    await execute(
        cli_engine,
        "UPDATE counters SET value = 10 WHERE name = 'articles'",
        "UPDATE tags SET articles_count = 9 WHERE name = 'cli'",
        "UPDATE articles SET favorites_count = 0",
    )

    checked = await invoke("check")
    assert checked.exit_code == 1, checked.output
    assert ALL_WELL not in checked.output
    assert "counters.articles[articles]: stored 10, actual 3" in checked.output
    assert f"tags.articles_count[{tag_id}]: stored 9, actual 2" in checked.output
    assert f"articles.favorites_count[{article_id}]: stored 0, actual 1" in checked.output
    assert "3 counter(s) differ" in checked.output
    assert "service counters rebuild" in checked.output

    rebuilt = await invoke("rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt: 3 row(s) corrected" in rebuilt.output
    async with cli_engine.connect() as conn:
        assert await counters.differences(conn) == []
    assert await scalar(cli_engine, "SELECT value FROM counters WHERE name = 'articles'") == 3

    again = await invoke("check")
    assert again.exit_code == 0, again.output
    assert ALL_WELL in again.output
    noop = await invoke("rebuild")
    assert noop.exit_code == 0, noop.output
    assert "rebuilt: 0 row(s) corrected" in noop.output

    # --show limits the listing per kind of counter, not the verdict
    await execute(cli_engine, "UPDATE tags SET articles_count = 7", "UPDATE users SET favorited_count = 5")

    everything = await invoke("check")
    assert everything.exit_code == 1
    assert everything.output.count("tags.articles_count[") == 2
    assert everything.output.count("users.favorited_count[") == 2
    assert "4 counter(s) differ" in everything.output

    limited = await invoke("check", "--show", "1")
    assert limited.exit_code == 1, limited.output
    assert limited.output.count("tags.articles_count[") == 1
    assert limited.output.count("users.favorited_count[") == 1
    assert "listing at most 1 per kind" in limited.output
    assert "4 counter(s) differ" in limited.output  # the total, not the listed ones

    rebuilt = await invoke("rebuild")
    assert "rebuilt: 4 row(s) corrected" in rebuilt.output  # two tags, two users
    assert (await invoke("check", "--show", "1")).exit_code == 0


@pytest.mark.parametrize("cli_engine", ["sqlite"], indirect=True)  # the command's own logic, whatever the backend
async def test_show_zero_still_fails_on_differences(cli_engine: AsyncEngine) -> None:
    await execute(cli_engine, "UPDATE tags SET articles_count = 7")
    result = await invoke("check", "--show", "0")
    assert result.exit_code == 1, result.output
    assert ALL_WELL not in result.output
