"""The rate limiter on its own: settings, the client address behind proxies, refresh limits, outage and recovery."""

import ipaddress
import logging
from typing import Any

import pytest
from limits.errors import StorageError
from pydantic import ValidationError
from starlette.requests import Request

from service.core import ratelimit
from service.core.config import Settings, parse_rate_limit
from service.core.errors import TooManyRequests
from service.core.ratelimit import RateLimiter, client_address


def _settings(**overrides: Any) -> Settings:
    return Settings(environment="test", secret_key="k" * 48, **overrides)


def _request(peer: str | None, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1234) if peer else None, "headers": headers})


def test_defaults_are_those_of_b5() -> None:
    settings = _settings()
    assert settings.rate_limits_enabled is True
    assert settings.rate_limit_login_account_failures == "10/15 minutes"
    assert settings.rate_limit_login_address == "100/hour"
    assert settings.rate_limit_register_address == "100/hour"
    assert settings.rate_limit_refresh_session == "60/hour"
    assert settings.trusted_proxies == []
    failures = parse_rate_limit(settings.rate_limit_login_account_failures)
    assert (failures.amount, failures.get_expiry()) == (10, 15 * 60)


@pytest.mark.parametrize("bad", ["lots", "10 per fortnight", "0/hour", "1/second;5/minute", ""])
def test_a_bad_limit_string_is_a_settings_error(bad: str) -> None:
    with pytest.raises(ValidationError, match="rate_limit_login_address") as info:
        _settings(rate_limit_login_address=bad)
    assert "expected one limit such as '100/hour'" in str(info.value)


def test_limits_and_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_RATE_LIMIT_REGISTER_ADDRESS", "5 per minute")
    monkeypatch.setenv("SERVICE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,fd00::/8")
    settings = _settings()
    assert settings.rate_limit_register_address == "5 per minute"
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]
    monkeypatch.setenv("SERVICE_TRUSTED_PROXIES", '["172.16.0.0/12"]')
    assert _settings().trusted_proxies == ["172.16.0.0/12"]


@pytest.mark.parametrize("bad", ["proxy.internal", "10.0.0.0/33", "300.1.1.1"])
def test_a_bad_trusted_proxy_is_a_settings_error(bad: str) -> None:
    with pytest.raises(ValidationError, match="trusted proxies must be IP addresses or CIDR networks"):
        _settings(trusted_proxies=[bad])


def test_a_redis_url_of_another_scheme_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="the Redis URL must start with"):
        _settings(redis_url="http://127.0.0.1:6379")
    assert _settings(redis_url="").redis_url is None


def test_the_limiter_refuses_bad_limits_even_from_unvalidated_settings() -> None:
    with pytest.raises(ValueError, match="invalid rate limit"):
        RateLimiter(_settings().model_copy(update={"rate_limit_refresh_address": "often"}))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///nonexistent/redis.sock"])
async def test_nothing_connects_at_construction(url: str) -> None:
    limiter = RateLimiter(_settings(redis_url=url))  # nothing listens there: building it must not notice
    await limiter.aclose()


PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", ("198.51.100.1",), "203.0.113.5"),  # an untrusted peer: its header is ignored
        ("10.0.0.5", (), "10.0.0.5"),  # a proxy without a header is the client
        ("10.0.0.5", ("198.51.100.1",), "198.51.100.1"),
        ("10.0.0.5", ("1.1.1.1, 198.51.100.1",), "198.51.100.1"),  # the client's own entries are skipped
        ("10.0.0.5", ("198.51.100.1, 10.9.9.9",), "198.51.100.1"),  # past every trusted proxy, from the right
        ("10.0.0.5", ("1.1.1.1", "198.51.100.1, 10.9.9.9"), "198.51.100.1"),  # several headers: one list
        ("10.0.0.5", ("10.1.1.1, 10.2.2.2",), "10.1.1.1"),  # all ours: the furthest is the client
        ("10.0.0.5", ("2001:DB8::1",), "2001:db8::1"),  # normalised, so one client is one key
        ("::ffff:10.0.0.5", ("198.51.100.1",), "198.51.100.1"),  # an IPv4-mapped peer is that IPv4 address
        ("fd00::1", ("::ffff:198.51.100.1",), "198.51.100.1"),
        ("10.0.0.5", ("not-an-ip",), "not-an-ip"),
        (None, (), "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: tuple[str, ...], expected: str) -> None:
    assert client_address(_request(peer, *forwarded), PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address(_request("10.0.0.5", "198.51.100.1"), []) == "10.0.0.5"
    limiter = RateLimiter(_settings(trusted_proxies=["10.0.0.0/8"]))
    assert limiter.client_address(_request("10.0.0.5", "198.51.100.1")) == "198.51.100.1"


async def test_refreshes_are_limited_per_session_and_per_address() -> None:
    limiter = RateLimiter(_settings(rate_limit_refresh_session="2/minute", rate_limit_refresh_address="3/minute"))
    for _ in range(2):
        await limiter.check_refresh("203.0.113.1", "session-1")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check_refresh("203.0.113.2", "session-1")  # another address, the same session
    assert refused.value.status_code == 429
    assert (refused.value.field, refused.value.message) == ("rate", "limit exceeded")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limiter.check_refresh("203.0.113.1", "session-2")  # the address's third refresh
    with pytest.raises(TooManyRequests):
        await limiter.check_refresh("203.0.113.1", "session-3")
    with pytest.raises(TooManyRequests):
        await limiter.check_refresh("203.0.113.1")  # without a session: the address alone
    await limiter.check_refresh("203.0.113.9")


async def test_retry_after_is_when_the_oldest_hit_leaves_the_window() -> None:
    limiter = RateLimiter(_settings(rate_limit_register_address="1/hour"))
    await limiter.check_register("203.0.113.1")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check_register("203.0.113.1")
    assert 3590 <= int(refused.value.headers["Retry-After"]) <= 3600


async def test_a_failure_past_the_limit_is_not_an_error() -> None:
    limiter = RateLimiter(_settings(rate_limit_login_account_failures="1/minute"))
    await limiter.login_failed("alice@example.com")
    await limiter.login_failed("Alice@Example.com")  # full already: recorded or not, the login still answers 401
    with pytest.raises(TooManyRequests):
        await limiter.check_login("203.0.113.1", "ALICE@example.com")


class _Flaky:
    """Stands in for the strategy: fails like an unreachable Redis (StorageError) while ``down``."""

    def __init__(self, real: Any) -> None:
        self.real, self.down, self.calls = real, False, 0

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise StorageError(ConnectionRefusedError("refused"))
            return await getattr(self.real, name)(*args, **kwargs)

        return call


async def test_an_outage_is_logged_once_and_its_end_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ratelimit, "STORAGE_RETRY_S", 0.0)
    caplog.set_level(logging.WARNING, logger="service.core.ratelimit")
    limiter = RateLimiter(_settings(rate_limit_register_address="2/minute"))
    flaky = _Flaky(limiter._window)
    limiter._window = flaky  # type: ignore[assignment]  # a fake strategy: what matters is that it raises

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "service.core.ratelimit"]

    flaky.down = True
    for _ in range(5):
        await limiter.check_register("203.0.113.1")  # fails open: no 429, no exception
    assert messages() == ["rate limits: storage unreachable, requests are not limited"]
    flaky.down = False
    await limiter.check_register("203.0.113.1")
    await limiter.check_register("203.0.113.1")
    with pytest.raises(TooManyRequests):
        await limiter.check_register("203.0.113.1")  # limits apply again
    assert messages()[1:] == ["rate limits: storage reachable again, limits apply"]
    flaky.down = True
    await limiter.check_register("203.0.113.1")
    assert len(messages()) == 3  # a new outage is a new warning


async def test_during_an_outage_the_storage_is_left_alone_for_a_while() -> None:
    limiter = RateLimiter(_settings())
    flaky = _Flaky(limiter._window)
    limiter._window = flaky  # type: ignore[assignment]  # a fake strategy: counts the calls that reach it
    flaky.down = True
    for _ in range(5):
        await limiter.check_register("203.0.113.1")
    assert flaky.calls == 1  # the next attempt waits STORAGE_RETRY_S: an outage adds no latency per request
