"""Unit tests for pure pieces: tokens, error mapping, settings, timestamps."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.core import config
from service.core.config import Environment, Settings, load_settings
from service.core.db import later_than
from service.core.errors import Unauthorized, message_for, validation_errors
from service.core.schemas import timestamp
from service.core.security import create_access_token, decode_access_token

SECRET = "s" * 48


def test_token_round_trip() -> None:
    token = create_access_token(42, 1, secret=SECRET, algorithm="HS256", ttl=timedelta(minutes=5))
    claims = decode_access_token(token, secret=SECRET, algorithm="HS256")
    assert claims.user_id == 42
    assert claims.expires_at - claims.issued_at == timedelta(minutes=5)


def test_token_expired_and_tampered() -> None:
    expired = create_access_token(1, 1, secret=SECRET, algorithm="HS256", ttl=timedelta(seconds=-1))
    with pytest.raises(Unauthorized) as exc:
        decode_access_token(expired, secret=SECRET, algorithm="HS256")
    assert exc.value.message == "has expired"
    good = create_access_token(1, 1, secret=SECRET, algorithm="HS256", ttl=timedelta(minutes=1))
    with pytest.raises(Unauthorized) as exc:
        decode_access_token(good[:-2] + "xx", secret=SECRET, algorithm="HS256")
    assert exc.value.message == "is invalid"
    with pytest.raises(Unauthorized):
        decode_access_token(good, secret=SECRET, algorithm="HS512")  # algorithm is pinned


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"type": "missing"}, "can't be blank"),
        ({"type": "string_too_long", "ctx": {"max_length": 9}}, "is too long (maximum is 9 characters)"),
        ({"type": "too_long", "input": "abc", "ctx": {"max_length": 2}}, "is too long (maximum is 2 characters)"),
        ({"type": "too_long", "input": [1, 2], "ctx": {"max_length": 1}}, "is too long (maximum is 1 items)"),
        ({"type": "string_too_short", "ctx": {"min_length": 8}}, "is too short (minimum is 8 characters)"),
        ({"type": "less_than_equal", "ctx": {"le": 100}}, "must be less than or equal to 100"),
        ({"type": "greater_than_equal", "ctx": {"ge": 0}}, "must be greater than or equal to 0"),
        ({"type": "int_parsing"}, "is invalid"),
        ({"type": "string_too_long", "ctx": {}}, "is invalid"),
    ],
)
def test_error_messages(error: dict[str, object], message: str) -> None:
    assert message_for(error) == message


def test_blank_wins_over_other_messages_of_a_field() -> None:
    errors: list[dict[str, Any]] = [
        {"type": "string_too_short", "loc": ("body", "user", "password"), "ctx": {"min_length": 8}},
        {"type": "missing", "loc": ("body", "user", "password")},
        {"type": "value_error", "loc": ("body", "user", "password")},
        {"type": "int_parsing", "loc": ("query", "limit")},
    ]
    assert validation_errors(errors, "user") == {"password": ["can't be blank"], "limit": ["is invalid"]}


def test_invalid_json_names_envelope() -> None:
    assert validation_errors([{"type": "json_invalid", "loc": ("body", 3)}], "article") == {
        "article": ["can't be blank"]
    }


def test_timestamps_always_have_microseconds_and_z() -> None:
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    east = timezone(timedelta(hours=5))
    assert timestamp(datetime(2026, 1, 2, 8, 4, 5, 7, tzinfo=east)) == "2026-01-02T03:04:05.000007Z"


def test_later_than_moves_forward_even_within_a_microsecond() -> None:
    future = datetime.now(UTC) + timedelta(seconds=5)
    assert later_than(future) == future + timedelta(microseconds=1)
    assert later_than(datetime(2020, 1, 1)) > datetime(2020, 1, 1, tzinfo=UTC)


def test_production_refuses_missing_or_weak_secret() -> None:
    with pytest.raises(ValidationError, match="SERVICE_SECRET_KEY"):
        Settings(environment=Environment.PRODUCTION)
    with pytest.raises(ValidationError, match="SERVICE_SECRET_KEY"):
        Settings(environment=Environment.PRODUCTION, secret_key="short")
    ok = Settings(environment=Environment.PRODUCTION, secret_key=SECRET)
    assert ok.effective_log_format == "json"


def test_production_refuses_wildcard_cors() -> None:
    with pytest.raises(ValidationError, match="CORS"):
        Settings(environment=Environment.PRODUCTION, secret_key=SECRET, cors_origins="*")


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('["http://a.test", "http://b.test"]', ["http://a.test", "http://b.test"]),
        ("http://a.test, http://b.test", ["http://a.test", "http://b.test"]),
        ("", []),
    ],
)
def test_cors_origins_json_or_comma_separated(monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]) -> None:
    monkeypatch.setenv("SERVICE_CORS_ORIGINS", raw)
    assert Settings().cors_origins == parsed


def test_development_secret_is_generated_once_and_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "VAR_DIR", tmp_path / "var")
    monkeypatch.delenv("SERVICE_SECRET_KEY", raising=False)
    first = load_settings(environment="development")
    second = load_settings(environment="development")
    assert first.jwt_secret() == second.jwt_secret()
    assert len(first.jwt_secret()) >= 32
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_union_member_locations_name_the_field_and_none_branch_is_silent() -> None:
    errors: list[dict[str, Any]] = [
        {
            "type": "string_too_long",
            "loc": ("body", "article", "title", "function-before[x]"),
            "ctx": {"max_length": 3},
        },
        {"type": "none_required", "loc": ("body", "article", "title", "none")},
        {"type": "string_too_long", "loc": ("body", "article", "tagList", 2), "ctx": {"max_length": 64}},
    ]
    assert validation_errors(errors, "article") == {
        "title": ["is too long (maximum is 3 characters)"],
        "tagList": ["is too long (maximum is 64 characters)"],
    }


async def test_database_errors_never_render_parameter_values(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from service.core.db import build_engine

    engine = build_engine(
        Settings(environment="test", secret_key=SECRET, database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db")
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as exc:
                await conn.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "hunter2-value"})
    finally:
        await engine.dispose()
    assert "hunter2-value" not in str(exc.value)
