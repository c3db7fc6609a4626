"""Settings, read once from the environment (prefix ``SERVICE_``) and an optional ``.env`` file."""

import json
import secrets
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VAR_DIR = Path("var")
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///./{VAR_DIR}/conduit.db"
MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "please-change-me"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVICE_", env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = DEFAULT_DATABASE_URL
    # Per worker. Sized for the requests a worker has in flight: with the pool exhausted, a request that arrives
    # as a connection comes back can take it before those already waiting (SQLAlchemy's queue is not FIFO under
    # asyncio), and the waiters make a long latency tail (measured: p99 x4 at 32 requests on 10 connections).
    database_pool_size: int = Field(default=20, ge=1)
    # No overflow by default: under sustained load an overflow connection is opened for one request and closed
    # after it (measured: most of a request's CPU went into connecting); waiting for a pooled one is cheaper.
    database_max_overflow: int = Field(default=0, ge=0)
    database_echo: bool = False
    secret_key: SecretStr | None = None
    access_token_ttl: timedelta = timedelta(hours=24)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    redis_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    max_body_size: int = Field(default=1024 * 1024, ge=1024)
    docs_enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a JSON list (``["http://a"]``) or a comma-separated string (``http://a,http://b``)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("access_token_ttl", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """A plain number is seconds (``3600``); ISO 8601 durations (``PT1H``) work as well."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_production(self) -> "Settings":
        if self.environment is Environment.PRODUCTION:
            secret = self.secret_key.get_secret_value() if self.secret_key else ""
            if len(secret) < MIN_SECRET_LENGTH or secret.lower() in _WEAK_SECRETS:
                raise ValueError(
                    f"SERVICE_SECRET_KEY must be set to a random string of at least {MIN_SECRET_LENGTH} "
                    "characters in production (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            if "*" in self.cors_origins:
                raise ValueError("SERVICE_CORS_ORIGINS may not contain '*' in production")
        return self

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.environment is Environment.PRODUCTION else "console"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def jwt_secret(self) -> str:
        if self.secret_key is None:  # pragma: no cover - get_settings() always fills it outside production
            raise RuntimeError("no secret key configured")
        return self.secret_key.get_secret_value()


def _persistent_dev_secret(path: Path) -> SecretStr:
    """Generate a development secret once and keep it, so tokens survive restarts."""
    if path.exists():
        return SecretStr(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return SecretStr(value)


def load_settings(**overrides: Any) -> Settings:
    settings = Settings(**overrides)
    if settings.secret_key is None:
        if settings.environment is Environment.TEST:
            settings.secret_key = SecretStr(secrets.token_urlsafe(48))
        else:
            settings.secret_key = _persistent_dev_secret(VAR_DIR / "secret_key")
    return settings


@lru_cache
def get_settings() -> Settings:
    return load_settings()
