"""SERVICE_SECRET_KEY_FILE: the signing key read from a mounted secret file instead of the environment."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from jose import jwt
from pydantic import ValidationError

from service.core.config import Settings, load_settings
from service.core.db import Database
from service.main import create_app
from tests.helpers import auth, register, serving

FILE_KEY = "k8s-mounted-" + "f" * 40
SERVICE = Path(sys.executable).with_name("service")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret_key"
    path.write_text(f"  {FILE_KEY}\n")  # as `python -c ... > file` writes it, and with stray blanks
    return path


@pytest.fixture
def file_settings(database_url: str, key_file: Path) -> Settings:
    return load_settings(environment="test", database_url=database_url, log_format="json", secret_key_file=key_file)


@pytest.fixture
async def file_client(file_settings: Settings, database: Database) -> AsyncIterator[AsyncClient]:
    app = serving(create_app(file_settings), database)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test/api") as c:
        yield c


async def test_tokens_are_signed_with_the_key_from_the_file(file_client: AsyncClient) -> None:
    user = await register(file_client)
    claims = jwt.decode(user["token"], FILE_KEY, algorithms=["HS256"])
    assert claims["sub"]
    current = await file_client.get("/user", headers=auth(user["token"]))
    assert current.status_code == 200
    assert current.json()["user"]["username"] == user["username"]


async def test_a_token_signed_with_another_key_is_refused(file_client: AsyncClient) -> None:
    user = await register(file_client)
    claims = jwt.decode(user["token"], FILE_KEY, algorithms=["HS256"])
    forged = jwt.encode(claims, "another-key-" + "x" * 40, algorithm="HS256")
    assert (await file_client.get("/user", headers=auth(forged))).status_code == 401


def test_production_accepts_a_strong_key_from_the_file(key_file: Path) -> None:
    settings = load_settings(environment="production", secret_key_file=key_file)
    assert settings.jwt_secret() == FILE_KEY


def test_production_refuses_a_weak_key_from_the_file(tmp_path: Path) -> None:
    weak = tmp_path / "weak"
    weak.write_text("changeme\n")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        load_settings(environment="production", secret_key_file=weak)


def test_setting_both_is_an_error(key_file: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        load_settings(environment="test", secret_key="e" * 48, secret_key_file=key_file)


@pytest.mark.parametrize("problem", ["missing", "directory", "empty", "not text"])
def test_an_unusable_file_is_an_error_naming_it(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "secret_key"
    if problem == "directory":
        path.mkdir()
    elif problem == "empty":
        path.write_text(" \n")
    elif problem == "not text":
        path.write_bytes(b"\xff\xfe\x00key")
    with pytest.raises(ValidationError, match=f"SERVICE_SECRET_KEY_FILE {path}"):
        load_settings(environment="production", secret_key_file=path)


def _run_service(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`service migrate` as a container starts it: settings only from the environment, in a directory of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(SERVICE), "migrate"],
        env={**clean, "SERVICE_ENVIRONMENT": "production", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_file_stops_the_service_with_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "run" / "secrets" / "secret_key"
    result = _run_service(tmp_path, SERVICE_SECRET_KEY_FILE=str(missing))
    assert result.returncode == 1
    assert f"SERVICE_SECRET_KEY_FILE {missing}: cannot be read (No such file or directory)" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_settings_error_prints_no_value_it_was_given(tmp_path: Path) -> None:
    # A weak key and a database password in the same environment: the error names the setting, never the values.
    result = _run_service(
        tmp_path,
        SERVICE_SECRET_KEY="short-but-secret",
        SERVICE_DATABASE_URL="postgresql+asyncpg://conduit:db-password-42@127.0.0.1:1/conduit",
    )
    output = result.stderr + result.stdout
    assert result.returncode == 1
    assert "SERVICE_SECRET_KEY must be set" in output
    assert "short-but-secret" not in output
    assert "db-password-42" not in output
    assert "Traceback" not in output
