"""Settings, read once from the environment (prefix ``SERVICE_``) and an optional ``.env`` file."""

import ipaddress
import json
import re
import secrets
from datetime import timedelta
from email.utils import parseaddr
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import RateLimitItem, parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VAR_DIR = Path("var")
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///./{VAR_DIR}/conduit.db"
MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = frozenset({"secret", "changeme", "change-me", "please-change-me"})
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_SECONDS = re.compile(r"\d+(\.\d+)?")
_MAIL_DURATIONS = ("smtp_timeout", "outbox_backoff_base", "outbox_backoff_max", "outbox_lease", "outbox_poll_interval")


def parse_rate_limit(text: str) -> RateLimitItem:
    """One limit in the ``limits`` notation (``100/hour``, ``10/15 minutes``, ``5 per minute``), else ValueError."""
    try:
        items = parse_many(text)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(f"invalid rate limit {text!r}: expected one limit such as '100/hour' or '10/15 minutes'")
    return items[0]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class Settings(BaseSettings):
    # hide_input_in_errors: a settings error must not print the values it was given (the secret key among them).
    model_config = SettingsConfigDict(env_prefix="SERVICE_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = DEFAULT_DATABASE_URL
    # Per worker. Sized for the requests a worker has in flight: with the pool exhausted, a request that arrives
    # as a connection comes back can take it before those already waiting (SQLAlchemy's queue is not FIFO under
    # asyncio), and the waiters make a long latency tail (measured: p99 x4 at 32 requests on 10 connections).
    database_pool_size: int = Field(default=20, ge=1)
    # No overflow by default: under sustained load an overflow connection is opened for one request and closed
    # after it (measured: most of a request's CPU went into connecting); waiting for a pooled one is cheaper.
    database_max_overflow: int = Field(default=0, ge=0)
    # True when database_url is a PgBouncer in transaction pooling mode (docs/scaling.md), where consecutive
    # statements of one connection may run on different server connections. Then no prepared statement outlives its
    # statement (asyncpg's and SQLAlchemy's statement caches off: each is parsed unnamed and run in one exchange), and
    # no statement_timeout/lock_timeout travels in the startup packet (PgBouncer refuses unknown startup parameters):
    # set those on the role or database (ALTER ROLE ... SET statement_timeout = '10s'). Costs one more round trip a
    # statement. Needed for PgBouncer before 1.21 (Debian 12 ships 1.18), which keeps no prepared statements.
    database_pgbouncer: bool = False
    database_echo: bool = False
    # Under faults (README "Under faults"): every wait on the database is bounded, and past the bound the client gets
    # 503 database unavailable with Retry-After. The timeouts are PostgreSQL's; SQLite waits for its one writer's
    # lock up to its busy timeout (5 s) instead. 0 turns a statement, lock or command timeout off.
    database_connect_timeout: timedelta = timedelta(seconds=5)  # opening a connection: TCP, TLS, authentication
    database_pool_timeout: timedelta = timedelta(seconds=5)  # waiting for a pooled connection when all are in use
    # Server-side: PostgreSQL cancels the statement (57014) and the connection stays usable.
    database_statement_timeout: timedelta = timedelta(seconds=10)
    # Server-side, waiting for a lock (55P03). The longest legitimate wait here is the queue on the `counters` row
    # (held for milliseconds by each writer) or a `counters rebuild` (a few seconds at a million articles); a
    # short bound frees the pooled connections of requests stuck behind one locked table.
    database_lock_timeout: timedelta = timedelta(seconds=5)
    # Client-side (asyncpg), for a server that stops answering (paused, partitioned): it sends nothing, so only the
    # client can give up. Above the statement timeout, so a merely slow statement is cancelled by the server first.
    database_command_timeout: timedelta = timedelta(seconds=15)
    database_retry_after: int = Field(default=5, ge=1)  # seconds, the Retry-After of a 503 database unavailable
    readiness_timeout: timedelta = timedelta(seconds=2)  # /health/ready answers within this, on its own connection
    secret_key: SecretStr | None = None
    # The key read from this file instead (a mounted Kubernetes or Docker secret), so it is in no environment.
    secret_key_file: Path | None = None
    access_token_ttl: timedelta = timedelta(hours=24)
    # A session (B5) ends after this long without a refresh; every refresh moves the end forward.
    session_ttl: timedelta = timedelta(days=30)
    # Two refreshes with one token (two tabs) this close together both succeed: the second gets the same new token.
    refresh_grace: timedelta = timedelta(seconds=10)
    # Link tokens mailed for B7: single-use; these long after they were sent, they have expired.
    verification_token_ttl: timedelta = timedelta(hours=48)
    password_reset_token_ttl: timedelta = timedelta(hours=1)
    # The frontend the mailed links open: {frontend_url}/verify?token=... and {frontend_url}/reset-password?token=...
    frontend_url: str = "http://127.0.0.1:4173"
    # Off by default (RealWorld clients know nothing of verification): on, an unverified user's writes are 403.
    require_verified_email: bool = False
    # How stale a session's lastUsedAt may get before a request writes it again: one write per session this often,
    # not one per request (a read would otherwise cost a write).
    session_touch_interval: timedelta = timedelta(minutes=5)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    redis_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Rate limits (B5), in the `limits` notation; counted in Redis when redis_url is set, else in this process.
    rate_limits_enabled: bool = True
    rate_limit_login_account_failures: str = "10/15 minutes"  # failed logins per account (lower-cased e-mail)
    rate_limit_login_address: str = "100/hour"
    rate_limit_register_address: str = "100/hour"
    rate_limit_refresh_session: str = "60/hour"
    # Not in B5: generous, so that many sessions behind one NAT (an office) refreshing hourly are never troubled.
    rate_limit_refresh_address: str = "600/hour"
    # E-mail verification and password reset (B7): resend and both reset endpoints, per client address, and the
    # mails sent per recipient (the account's address for a resend, the address asked about for a reset).
    rate_limit_email_address: str = "100/hour"
    rate_limit_email_recipient: str = "5/hour"
    rate_limit_key_prefix: str = Field(default="conduit", min_length=1)  # Redis keys: one prefix per deployment
    # Peers (IPs or CIDRs) whose X-Forwarded-For is believed: the reverse proxies in front of the service.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # E-mail and the outbox (README "E-mail and background jobs"). mail_backend "log" writes each message, links
    # included so a developer can follow them, to the log at INFO instead of sending it: the default outside
    # production, and refused in production (a link carries a token). None: "smtp" in production, else "log".
    mail_backend: Literal["log", "smtp"] | None = None
    smtp_host: str = "localhost"
    smtp_port: int | None = Field(default=None, ge=1, le=65535)  # None: 465 for tls, 587 for starttls, 25 for none
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Conduit <no-reply@localhost>"  # its domain also names every Message-ID
    smtp_timeout: timedelta = timedelta(seconds=10)  # each SMTP step (connect, TLS, each command)
    outbox_max_attempts: int = Field(default=8, ge=1)  # then the event is dead (a dead letter, retried by an admin)
    outbox_backoff_base: timedelta = timedelta(seconds=30)  # the wait after the first failure; doubles each time
    outbox_backoff_max: timedelta = timedelta(hours=1)
    # A claimed delivery must end within this; an event whose deliverer died is retried once it has passed.
    outbox_lease: timedelta = timedelta(seconds=60)
    outbox_poll_interval: timedelta = timedelta(seconds=5)  # how often due (retried, orphaned) events are swept
    outbox_queue: str = Field(default="conduit-outbox", min_length=1)  # the saq queue name (Redis keys saq:<name>:*)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None
    max_body_size: int = Field(default=1024 * 1024, ge=1024)
    # Seconds a shared cache may keep an anonymous public read (tags, the article list, an article, its comments, a
    # profile): Cache-Control public, max-age, Vary Authorization. 0 (the default): no such header, as before.
    public_cache_max_age: int = Field(default=0, ge=0)
    docs_enabled: bool = True
    # OpenTelemetry tracing of requests and SQL, exported over OTLP/HTTP; configured by the standard OTEL_* variables.
    otel_enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # SIGTERM (README "Graceful shutdown"): /health/ready answers 503 at once while requests are still served this
    # long, so the load balancer stops sending; then the listener closes (0: at once; Ctrl-C never waits).
    shutdown_delay: timedelta = Field(default=timedelta(seconds=5), ge=timedelta(0))
    shutdown_timeout: timedelta = timedelta(seconds=20)  # then in-flight requests get this long, the rest cancelled

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a JSON list (``["http://a"]``) or a comma-separated string (``http://a,http://b``)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator(
        "access_token_ttl",
        "session_ttl",
        "refresh_grace",
        "session_touch_interval",
        "verification_token_ttl",
        "password_reset_token_ttl",
        "database_connect_timeout",
        "database_pool_timeout",
        "database_statement_timeout",
        "database_lock_timeout",
        "database_command_timeout",
        "readiness_timeout",
        "shutdown_delay",
        "shutdown_timeout",
        *_MAIL_DURATIONS,
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """A plain number is seconds (``3600``, ``0.5``); ISO 8601 durations (``PT1H``) work as well."""
        if isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
            return float(value)
        return value

    @field_validator(
        "database_connect_timeout", "database_pool_timeout", "readiness_timeout", "shutdown_timeout", *_MAIL_DURATIONS
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator("database_statement_timeout", "database_lock_timeout", "database_command_timeout")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must be a duration of 0 (no timeout) or more")
        return value

    @field_validator(
        "rate_limit_login_account_failures",
        "rate_limit_login_address",
        "rate_limit_register_address",
        "rate_limit_refresh_session",
        "rate_limit_refresh_address",
        "rate_limit_email_address",
        "rate_limit_email_recipient",
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(item, strict=False)) for item in value]
        except ValueError as exc:
            raise ValueError(f"trusted proxies must be IP addresses or CIDR networks: {exc}") from None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"the Redis URL must start with {', '.join(_REDIS_SCHEMES)}")
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _read_secret_key_file(self) -> "Settings":
        if self.secret_key_file is None:
            return self
        if self.secret_key is not None:
            raise ValueError("set SERVICE_SECRET_KEY or SERVICE_SECRET_KEY_FILE, not both")
        try:
            value = self.secret_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ValueError(f"SERVICE_SECRET_KEY_FILE {self.secret_key_file}: cannot be read ({reason})") from None
        if not value:
            raise ValueError(f"SERVICE_SECRET_KEY_FILE {self.secret_key_file} is empty")
        self.secret_key = SecretStr(value)
        return self

    @field_validator("mail_from")
    @classmethod
    def _mail_from_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or not address.rpartition("@")[2]:
            raise ValueError("must be an address such as 'Conduit <no-reply@example.com>'")
        return value

    @model_validator(mode="after")
    def _check_mail(self) -> "Settings":
        if self.environment is Environment.PRODUCTION and self.mail_backend == "log":
            raise ValueError("SERVICE_MAIL_BACKEND=log is refused in production: mailed links carry tokens")
        return self

    @property
    def effective_mail_backend(self) -> Literal["log", "smtp"]:
        if self.mail_backend is not None:
            return self.mail_backend
        return "smtp" if self.environment is Environment.PRODUCTION else "log"

    @property
    def effective_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"tls": 465, "starttls": 587, "none": 25}[self.smtp_tls]

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
    """The process's settings; invalid ones end it with one line per error (no traceback, no values)."""
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [f"  {_env_name(error['loc'])}{error['msg'].removeprefix('Value error, ')}" for error in exc.errors()]
        raise SystemExit("invalid settings:\n" + "\n".join(lines)) from None


def _env_name(loc: tuple[int | str, ...]) -> str:
    return f"SERVICE_{str(loc[0]).upper()}: " if loc else ""
