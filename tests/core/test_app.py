"""The real start-up path (lifespan) and the command line."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from typer.testing import CliRunner

from service.cli import app as cli
from service.core import migrations
from service.core.config import Settings, get_settings
from service.main import create_app


@asynccontextmanager
async def started(app: Any) -> AsyncIterator[AsyncClient]:
    """Run the app's lifespan and hand its state to each request, as uvicorn does (ASGITransport does not)."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        async with AsyncClient(transport=ASGITransport(app=with_state), base_url="http://t") as client:
            yield client


def _settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        environment="test",
        secret_key="k" * 48,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/live.db",
        redis_url=redis_url,
    )


async def test_lifespan_serves_readiness_with_database_and_redis(tmp_path: Path) -> None:
    async with started(create_app(_settings(tmp_path, "redis://127.0.0.1:6379/0"))) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readiness_reports_unreachable_redis(tmp_path: Path) -> None:
    async with started(create_app(_settings(tmp_path, "redis://127.0.0.1:1/0"))) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SERVICE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("SERVICE_SECRET_KEY", "c" * 48)
    monkeypatch.setenv("SERVICE_ENVIRONMENT", "test")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_migrate_then_create_admin_from_piped_password(cli_env: Path) -> None:
    runner = CliRunner()
    migrated = runner.invoke(cli, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    created = runner.invoke(
        cli,
        ["users", "create", "--email", "root@example.com", "--username", "root", "--role", "admin"],
        input="a-very-good-password\n",
    )
    assert created.exit_code == 0, created.output
    assert "created admin root" in created.output
    assert "a-very-good-password" not in created.output
    again = runner.invoke(
        cli, ["users", "create", "--email", "x@example.com", "--username", "ROOT"], input="a-very-good-password\n"
    )
    assert again.exit_code == 1
    assert "username has already been taken" in again.output


def test_cli_rejects_bad_role_and_short_password(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    bad_role = runner.invoke(
        cli, ["users", "create", "--email", "a@b.co", "--username", "a", "--role", "god"], input="x\n"
    )
    assert bad_role.exit_code == 2
    short = runner.invoke(cli, ["users", "create", "--email", "a@b.co", "--username", "a"], input="short\n")
    assert short.exit_code == 2
    assert "password" in short.output


def test_cli_openapi_writes_schema(cli_env: Path) -> None:
    out = cli_env / "openapi.json"
    result = CliRunner().invoke(cli, ["openapi", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["info"]["title"] == "Conduit"


def test_service_migrate_works_from_any_directory(tmp_path: Path) -> None:
    """The console script finds its migrations wherever it is started (as in the image: no alembic.ini in cwd)."""
    env = {
        **os.environ,
        "SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/elsewhere.db",
        "SERVICE_ENVIRONMENT": "test",
        "SERVICE_SECRET_KEY": "m" * 48,
    }
    service = Path(sys.executable).parent / "service"
    result = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(service), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "database at head" in result.stdout
    assert (tmp_path / "elsewhere.db").exists()


async def test_concurrent_writes_on_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """SQLite has one writer: a write request takes the write lock when it begins (BEGIN IMMEDIATE) and waits its
    turn, instead of failing when two deferred transactions both try to upgrade their read locks."""
    url = f"sqlite+aiosqlite:///{tmp_path}/busy.db"
    await asyncio.to_thread(migrations.upgrade, url)
    settings = Settings(environment="test", secret_key="k" * 48, database_url=url)
    async with started(create_app(settings)) as client:
        users = [
            (
                await client.post(
                    "/api/users", json={"user": {"username": f"w{i}", "email": f"w{i}@x.io", "password": "password1"}}
                )
            ).json()["user"]
            for i in range(8)
        ]
        slug = (
            await client.post(
                "/api/articles",
                headers={"Authorization": f"Token {users[0]['token']}"},
                json={"article": {"title": "Busy", "description": "d", "body": "b"}},
            )
        ).json()["article"]["slug"]

        async def read_then_write(user: dict[str, Any]) -> int:
            headers = {"Authorization": f"Token {user['token']}"}
            await client.get(f"/api/articles/{slug}", headers=headers)
            favorite = await client.post(f"/api/articles/{slug}/favorite", headers=headers)
            comment = await client.post(
                f"/api/articles/{slug}/comments", headers=headers, json={"comment": {"body": "hi"}}
            )
            return favorite.status_code * 1000 + comment.status_code

        results = await asyncio.gather(*(read_then_write(u) for u in users for _ in range(3)))
        article = (await client.get(f"/api/articles/{slug}")).json()["article"]
    assert set(results) == {200 * 1000 + 201}
    assert article["favoritesCount"] == 8
