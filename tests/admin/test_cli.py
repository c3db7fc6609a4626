"""``service users set-role``: the bootstrap path beside ``users create --role``, under the same last-admin rule."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from service.audit.models import AuditEntry
from service.cli import app as cli
from service.core.config import get_settings
from service.core.db import create_engine_for
from service.users.models import User


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("SERVICE_DATABASE_URL", url)
    monkeypatch.setenv("SERVICE_SECRET_KEY", "s" * 48)
    monkeypatch.setenv("SERVICE_ENVIRONMENT", "test")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    for username, role in (("root", "admin"), ("jake", "user")):
        created = runner.invoke(
            cli,
            ["users", "create", "--email", f"{username}@example.com", "--username", username, "--role", role],
            input="a-very-good-password\n",
        )
        assert created.exit_code == 0, created.output
    yield url
    get_settings.cache_clear()


def _rows(url: str, statement: Any) -> list[Any]:
    async def read() -> list[Any]:
        engine = create_engine_for(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(statement)).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_set_role_changes_the_role_and_audits_it_as_system(cli_db: str) -> None:
    result = CliRunner().invoke(cli, ["users", "set-role", "JAKE", "moderator"])
    assert result.exit_code == 0, result.output
    assert "jake is now moderator" in result.output
    assert _rows(cli_db, select(User.username, User.role).order_by(User.id)) == [
        ("root", "admin"),
        ("jake", "moderator"),
    ]
    entries = _rows(
        cli_db,
        select(AuditEntry.actor_id, AuditEntry.actor, AuditEntry.action, AuditEntry.target, AuditEntry.request_id),
    )
    assert entries == [(None, "system", "user.role.moderator", "user:jake", None)]


def test_set_role_keeps_the_last_admin(cli_db: str) -> None:
    runner = CliRunner()
    refused = runner.invoke(cli, ["users", "set-role", "root", "user"])
    assert refused.exit_code == 1
    assert "role last admin" in refused.output
    assert _rows(cli_db, select(AuditEntry.id)) == []
    # with a second admin, the first may step down
    assert runner.invoke(cli, ["users", "set-role", "jake", "admin"]).exit_code == 0
    stepped_down = runner.invoke(cli, ["users", "set-role", "root", "user"])
    assert stepped_down.exit_code == 0, stepped_down.output
    assert _rows(cli_db, select(User.username, User.role).order_by(User.id)) == [("root", "user"), ("jake", "admin")]
    assert [row[0] for row in _rows(cli_db, select(AuditEntry.action).order_by(AuditEntry.id))] == [
        "user.role.admin",
        "user.role.user",
    ]


def test_set_role_rejects_unknown_users_and_roles(cli_db: str) -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli, ["users", "set-role", "nobody", "admin"])
    assert unknown.exit_code == 1
    assert "user not found" in unknown.output
    bad_role = runner.invoke(cli, ["users", "set-role", "jake", "god"])
    assert bad_role.exit_code == 2
    same = runner.invoke(cli, ["users", "set-role", "root", "admin"])  # no change: nothing to refuse or audit
    assert same.exit_code == 0
    assert _rows(cli_db, select(AuditEntry.id)) == []
