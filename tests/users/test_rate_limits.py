"""B3 and B5 rate limits over HTTP: login failures per account, logins and registrations per address, the client
address behind trusted proxies, counts shared through Redis, and a Redis outage that lets requests through."""

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.core import ratelimit
from service.core.config import Settings
from service.core.db import Database
from service.main import create_app
from tests.conftest import IN_CI
from tests.helpers import PASSWORD, register, serving

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens there: every connection is refused
RATE_LIMITED = {"errors": {"rate": ["limit exceeded"]}}
MakeApp = Callable[..., FastAPI]


@pytest.fixture
async def make_app(settings: Settings) -> AsyncIterator[MakeApp]:
    """Apps built from the test's settings with ``overrides``; their limiters are closed afterwards."""
    made: list[FastAPI] = []

    def _make(**overrides: Any) -> FastAPI:
        app = create_app(settings.model_copy(update=overrides))
        made.append(app)
        return app

    yield _make
    for app in made:
        await app.state.rate_limiter.aclose()


@asynccontextmanager
async def client_of(app: FastAPI, database: Database, peer: str = "127.0.0.1") -> AsyncIterator[AsyncClient]:
    """A client whose requests reach ``app`` from ``peer`` (ASGITransport's default peer is 127.0.0.1)."""
    transport = ASGITransport(app=serving(app, database), client=(peer, 40000))
    async with AsyncClient(transport=transport, base_url="http://test/api") as client:
        yield client


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the real Redis (skipped if none runs, except in CI); keys removed after."""
    redis = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        await redis.aclose()
        if IN_CI:
            raise
        pytest.skip(f"Redis unreachable at {REDIS_URL} ({type(exc).__name__})")
    prefix = f"conduit-test-{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def login(client: AsyncClient, email: str, password: str = PASSWORD, **headers: str) -> Response:
    return await client.post("/users/login", json={"user": {"email": email, "password": password}}, headers=headers)


async def register_as(client: AsyncClient, name: str, **headers: str) -> Response:
    payload = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    return await client.post("/users", json={"user": payload}, headers=headers)


def assert_rate_limited(response: Response, window_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == RATE_LIMITED
    assert 1 <= int(response.headers["Retry-After"]) <= window_s


async def test_eleventh_failed_login_is_429_even_with_the_right_password(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    for _ in range(10):
        assert (await login(client, alice["email"], "wrong-password")).status_code == 401
    assert_rate_limited(await login(client, alice["email"], "wrong-password"), 15 * 60)
    assert_rate_limited(await login(client, alice["email"]), 15 * 60)
    assert_rate_limited(await login(client, alice["email"].upper()), 15 * 60)  # the account is the e-mail, any case


async def test_failures_for_an_unknown_email_lock_that_email_too(client: AsyncClient) -> None:
    for _ in range(10):
        assert (await login(client, "nobody@example.com", "wrong-password")).status_code == 401
    assert_rate_limited(await login(client, "nobody@example.com"), 15 * 60)  # no hint whether the account exists


async def test_successful_logins_do_not_count_as_failures(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    for _ in range(9):
        assert (await login(client, alice["email"], "wrong-password")).status_code == 401
    for _ in range(5):
        assert (await login(client, alice["email"])).status_code == 200
    assert (await login(client, alice["email"], "wrong-password")).status_code == 401  # the 10th failure
    assert_rate_limited(await login(client, alice["email"]), 15 * 60)


async def test_a_locked_account_leaves_other_accounts_from_the_same_address_alone(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    for _ in range(11):
        await login(client, alice["email"], "wrong-password")
    assert_rate_limited(await login(client, alice["email"]), 15 * 60)
    assert (await login(client, bob["email"])).status_code == 200
    assert (await login(client, bob["email"], "wrong-password")).status_code == 401


async def test_logins_per_address_are_limited(make_app: MakeApp, database: Database) -> None:
    app = make_app(rate_limit_login_address="3/minute")
    async with client_of(app, database) as client, client_of(app, database, peer="10.0.0.5") as elsewhere:
        alice = await register(client, "alice")
        bob = await register(client, "bob")
        assert (await login(client, alice["email"])).status_code == 200
        assert (await login(client, bob["email"], "wrong-password")).status_code == 401
        assert (await login(client, bob["email"])).status_code == 200
        assert_rate_limited(await login(client, alice["email"]), 60)  # any account: the address is spent
        assert (await login(elsewhere, alice["email"])).status_code == 200


async def test_registrations_per_address_are_limited(make_app: MakeApp, database: Database) -> None:
    app = make_app(rate_limit_register_address="3/minute")
    async with client_of(app, database) as client, client_of(app, database, peer="10.0.0.5") as elsewhere:
        for name in ("ann", "ben", "cid"):
            assert (await register_as(client, name)).status_code == 201
        assert_rate_limited(await register_as(client, "dee"), 60)
        assert (await register_as(elsewhere, "dee")).status_code == 201


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_app: MakeApp, database: Database) -> None:
    app = make_app(rate_limit_register_address="2/minute")  # no trusted proxies: the peer is the client
    async with client_of(app, database) as client:
        assert (await register_as(client, "ann", **{"X-Forwarded-For": "203.0.113.1"})).status_code == 201
        assert (await register_as(client, "ben", **{"X-Forwarded-For": "203.0.113.2"})).status_code == 201
        assert_rate_limited(await register_as(client, "cid", **{"X-Forwarded-For": "203.0.113.3"}), 60)


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(make_app: MakeApp, database: Database) -> None:
    app = make_app(rate_limit_register_address="2/minute", trusted_proxies=["10.0.0.0/8"])
    async with client_of(app, database, peer="10.0.0.5") as proxy:
        client = {"X-Forwarded-For": "203.0.113.7"}
        assert (await register_as(proxy, "ann", **client)).status_code == 201
        assert (await register_as(proxy, "ben", **client)).status_code == 201
        assert_rate_limited(await register_as(proxy, "cid", **client), 60)
        # What the client wrote itself (left of the address the proxy saw) changes nothing, nor does a second proxy.
        assert_rate_limited(await register_as(proxy, "cid", **{"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}), 60)
        assert_rate_limited(await register_as(proxy, "cid", **{"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}), 60)
        assert (await register_as(proxy, "cid", **{"X-Forwarded-For": "203.0.113.8"})).status_code == 201
        assert (await register_as(proxy, "dee")).status_code == 201  # no header: the proxy itself is the client


async def test_disabled_rate_limits_never_refuse(make_app: MakeApp, database: Database) -> None:
    app = make_app(rate_limits_enabled=False, rate_limit_register_address="1/minute", rate_limit_login_address="1/hour")
    async with client_of(app, database) as client:
        for name in ("ann", "ben", "cid"):
            assert (await register_as(client, name)).status_code == 201
        for _ in range(12):
            assert (await login(client, "ann@example.com", "wrong-password")).status_code == 401
        assert (await login(client, "ann@example.com")).status_code == 200


async def test_rate_limits_are_documented_on_login_and_register(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert "429" in paths["/api/users/login"]["post"]["responses"]
    assert "429" in paths["/api/users"]["post"]["responses"]


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rate limiter used: {name}")


async def test_reads_do_no_rate_limit_work(app: FastAPI, client: AsyncClient) -> None:
    user = await register(client, "alice")
    app.state.rate_limiter = _Untouchable()
    for path in ("/tags", "/articles", "/profiles/alice"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/user", headers={"Authorization": f"Token {user['token']}"})).status_code == 200


async def test_instances_sharing_redis_share_the_counts(
    make_app: MakeApp, database: Database, redis_prefix: str
) -> None:
    shared = {"redis_url": REDIS_URL, "rate_limit_key_prefix": redis_prefix, "rate_limit_register_address": "3/minute"}
    one, two = make_app(**shared), make_app(**shared)
    async with client_of(one, database) as first, client_of(two, database) as second:
        assert (await register_as(first, "ann")).status_code == 201
        assert (await register_as(second, "ben")).status_code == 201
        assert (await register_as(first, "cid")).status_code == 201
        assert_rate_limited(await register_as(second, "dee"), 60)
        assert_rate_limited(await register_as(first, "dee"), 60)
        for n in range(10):  # failures split across both instances lock the account on both
            assert (await login(first if n % 2 else second, "ann@example.com", "wrong-password")).status_code == 401
        assert_rate_limited(await login(first, "ann@example.com"), 15 * 60)
        assert_rate_limited(await login(second, "ann@example.com"), 15 * 60)

    other = make_app(**{**shared, "rate_limit_key_prefix": f"{redis_prefix}-other"})
    async with client_of(other, database) as third:  # another prefix (deployment) counts on its own
        assert (await register_as(third, "dee")).status_code == 201
        assert (await login(third, "ann@example.com")).status_code == 200


@pytest.fixture
def unreachable_redis_app(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    # Built before the test body: create_app configures logging, which would drop caplog's handler mid-test.
    monkeypatch.setattr(ratelimit, "STORAGE_RETRY_S", 0.0)  # every request tries Redis again: still one warning
    return make_app(
        redis_url=CLOSED_PORT_URL, rate_limit_register_address="1/minute", rate_limit_login_address="1/hour"
    )


async def test_unreachable_redis_lets_requests_through_with_one_warning(
    unreachable_redis_app: FastAPI, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.core.ratelimit")
    redis = Redis.from_url(CLOSED_PORT_URL)  # what the lifespan would put in the state, for readiness
    app = serving(unreachable_redis_app, database)

    async def with_redis(scope: Any, receive: Any, send: Any) -> None:
        scope["state"] = {**scope.get("state", {}), "redis": redis}
        await app(scope, receive, send)

    transport = ASGITransport(app=with_redis)
    try:
        async with AsyncClient(transport=transport, base_url="http://test/api") as api:
            for name in ("ann", "ben", "cid"):
                assert (await register_as(api, name)).status_code == 201
            for _ in range(12):
                assert (await login(api, "ann@example.com", "wrong-password")).status_code == 401
            assert (await login(api, "ann@example.com")).status_code == 200
        async with AsyncClient(transport=transport, base_url="http://test") as ops:
            ready = await ops.get("/health/ready")
    finally:
        await redis.aclose()
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"] == "unavailable"
    warnings = [r for r in caplog.records if r.name == "service.core.ratelimit" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["rate limits: storage unreachable, requests are not limited"]
