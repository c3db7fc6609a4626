"""Contract B3a over HTTP: CORS for the configured origins, JSON content types everywhere, security headers."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient, Response

from service.core.config import Settings, load_settings
from service.core.db import Database
from service.main import create_app
from tests.helpers import article_payload, auth, register, serving

ORIGIN = "http://127.0.0.1:4173"
OTHER_ORIGIN = "http://evil.example"
REQUEST_HEADERS = "authorization,content-type,x-request-id"

# Every /api route template and the methods it serves.
ROUTES: list[tuple[str, list[str]]] = [
    ("/users", ["POST"]),
    ("/users/login", ["POST"]),
    ("/user", ["GET", "PUT"]),
    ("/profiles/x", ["GET"]),
    ("/profiles/x/follow", ["POST", "DELETE"]),
    ("/articles", ["GET", "POST"]),
    ("/articles/feed", ["GET"]),
    ("/articles/x", ["GET", "PUT", "DELETE"]),
    ("/articles/x/favorite", ["POST", "DELETE"]),
    ("/articles/x/comments", ["GET", "POST"]),
    ("/articles/x/comments/1", ["DELETE"]),
    ("/tags", ["GET"]),
]
ROUTE_METHODS = [(path, method) for path, methods in ROUTES for method in methods]


def _client(app: Any, database: Database, **transport: Any) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=serving(app, database), **transport), base_url="http://test/api")


@pytest.fixture
async def cors_client(settings: Settings, database: Database) -> AsyncIterator[AsyncClient]:
    app = create_app(settings.model_copy(update={"cors_origins": [ORIGIN]}))
    async with _client(app, database) as c:
        yield c


def _listed(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


async def _preflight(client: AsyncClient, path: str, method: str, origin: str = ORIGIN) -> Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": REQUEST_HEADERS,
    }
    return await client.options(path, headers=headers)


def _assert_allowed_preflight(response: Response, method: str, origin: str = ORIGIN) -> None:
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert method.lower() in _listed(response.headers.get("Access-Control-Allow-Methods"))
    assert {"authorization", "content-type", "x-request-id"} <= _listed(
        response.headers.get("Access-Control-Allow-Headers")
    )
    assert "origin" in _listed(response.headers.get("Vary"))


# ---------------------------------------------------------------------------------------------------------------
# CORS


@pytest.mark.parametrize(("path", "method"), ROUTE_METHODS)
async def test_preflight_is_answered_without_auth_on_every_route(
    cors_client: AsyncClient, path: str, method: str
) -> None:
    response = await _preflight(cors_client, path, method)
    _assert_allowed_preflight(response, method)
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("path", [path for path, _ in ROUTES])
async def test_preflight_allows_every_method_of_the_route(cors_client: AsyncClient, path: str) -> None:
    methods = dict(ROUTES)[path]
    response = await _preflight(cors_client, path, methods[0])
    assert {m.lower() for m in methods} <= _listed(response.headers.get("Access-Control-Allow-Methods"))


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [
        ("GET", "/tags", False),
        ("GET", "/articles", False),
        ("GET", "/user", True),
        ("GET", "/user", False),  # the 401 must be readable by the page too
        ("GET", "/articles/nope", False),  # and the 404
        ("GET", "/no-such-route", False),
    ],
)
async def test_real_request_from_allowed_origin_gets_cors_headers(
    cors_client: AsyncClient, method: str, path: str, token: bool
) -> None:
    headers = {"Origin": ORIGIN}
    if token:
        headers.update(auth((await register(cors_client))["token"]))
    response = await cors_client.request(method, path, headers=headers)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-request-id" in _listed(response.headers.get("Access-Control-Expose-Headers"))
    assert response.headers["X-Request-ID"]
    assert "origin" in _listed(response.headers.get("Vary"))


async def test_real_write_from_allowed_origin_gets_cors_headers(cors_client: AsyncClient) -> None:
    payload = {"user": {"username": "browser", "email": "browser@example.com", "password": "browser-password"}}
    response = await cors_client.post("/users", json=payload, headers={"Origin": ORIGIN, "X-Request-ID": "from-page"})
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["X-Request-ID"] == "from-page"
    assert "x-request-id" in _listed(response.headers.get("Access-Control-Expose-Headers"))


@pytest.mark.parametrize(
    "origin", [OTHER_ORIGIN, "http://127.0.0.1:4174", "https://127.0.0.1:4173", "http://localhost:4173", "null"]
)
async def test_unlisted_origin_gets_no_allow_origin(cors_client: AsyncClient, origin: str) -> None:
    preflight = await _preflight(cors_client, "/articles", "POST", origin)
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert preflight.status_code == 403
    assert preflight.json() == {"errors": {"origin": ["is not allowed"]}}
    real = await cors_client.get("/tags", headers={"Origin": origin})
    assert real.status_code == 200  # served (a non-browser client is not hindered), but a browser cannot read it
    assert "Access-Control-Allow-Origin" not in real.headers
    assert "Access-Control-Expose-Headers" not in real.headers


@pytest.mark.parametrize("origin", [ORIGIN, OTHER_ORIGIN])
async def test_default_settings_allow_no_origin(client: AsyncClient, settings: Settings, origin: str) -> None:
    assert settings.cors_origins == []
    preflight = await _preflight(client, "/user", "GET", origin)
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert not 200 <= preflight.status_code < 300
    real = await client.get("/tags", headers={"Origin": origin})
    assert real.status_code == 200
    assert "Access-Control-Allow-Origin" not in real.headers


async def test_request_without_origin_gets_no_cors_headers(cors_client: AsyncClient) -> None:
    response = await cors_client.get("/tags")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_options_without_preflight_headers_is_not_a_preflight(cors_client: AsyncClient) -> None:
    response = await cors_client.options("/tags", headers={"Origin": ORIGIN})
    assert response.status_code == 405
    assert response.json() == {"errors": {"method": ["not allowed"]}}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize(
    "raw",
    [
        '["http://127.0.0.1:4173", "https://conduit.example"]',
        "http://127.0.0.1:4173,https://conduit.example",
        " http://127.0.0.1:4173 , https://conduit.example ",
        '["http://127.0.0.1:4173/", "https://conduit.example/"]',
    ],
)
async def test_origins_from_environment_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    database: Database,
    raw: str,
) -> None:
    monkeypatch.setenv("SERVICE_CORS_ORIGINS", raw)
    settings = load_settings(environment="test", database_url=database_url, log_format="json")
    assert [o.rstrip("/") for o in settings.cors_origins] == ["http://127.0.0.1:4173", "https://conduit.example"]
    async with _client(create_app(settings), database) as c:
        for origin in ("http://127.0.0.1:4173", "https://conduit.example"):
            _assert_allowed_preflight(await _preflight(c, "/articles", "POST", origin), "POST", origin)
            real = await c.get("/tags", headers={"Origin": origin})
            assert real.headers["Access-Control-Allow-Origin"] == origin
        refused = await _preflight(c, "/articles", "POST", OTHER_ORIGIN)
        assert "Access-Control-Allow-Origin" not in refused.headers


# ---------------------------------------------------------------------------------------------------------------
# Content-Type: application/json on requests without a body


async def _world(client: AsyncClient) -> dict[str, Any]:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    article = {"title": "Dragons", "description": "d", "body": "b"}
    created = await client.post("/articles", json={"article": article}, headers=auth(alice["token"]))
    slug = created.json()["article"]["slug"]
    comment = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=auth(bob["token"])
    )
    return {"alice": alice["token"], "bob": bob["token"], "slug": slug, "comment": comment.json()["comment"]["id"]}


@pytest.mark.parametrize("content", [None, b"", b"{}"])
async def test_json_content_type_on_bodiless_requests_is_accepted(client: AsyncClient, content: bytes | None) -> None:
    w = await _world(client)
    slug = w["slug"]
    calls: list[tuple[str, str, str | None, int]] = [
        ("GET", "/user", w["bob"], 200),
        ("GET", "/tags", None, 200),
        ("GET", "/articles", None, 200),
        ("GET", "/articles/feed", w["bob"], 200),
        ("GET", f"/articles/{slug}", w["bob"], 200),
        ("GET", "/profiles/alice", None, 200),
        ("GET", f"/articles/{slug}/comments", w["bob"], 200),
        ("POST", "/profiles/alice/follow", w["bob"], 200),
        ("DELETE", "/profiles/alice/follow", w["bob"], 200),
        ("POST", f"/articles/{slug}/favorite", w["bob"], 200),
        ("DELETE", f"/articles/{slug}/favorite", w["bob"], 200),
        ("DELETE", f"/articles/{slug}/comments/{w['comment']}", w["bob"], 204),
        ("DELETE", f"/articles/{slug}", w["alice"], 204),
    ]
    for method, path, token, expected in calls:
        headers = {"Content-Type": "application/json", **(auth(token) if token else {})}
        response = await client.request(method, path, content=content, headers=headers)
        assert response.status_code == expected, (method, path, response.status_code, response.text)


# ---------------------------------------------------------------------------------------------------------------
# Security headers


async def test_nosniff_on_every_response(cors_client: AsyncClient, settings: Settings) -> None:
    w = await _world(cors_client)
    slug = w["slug"]
    big = b"x" * (settings.max_body_size + 1)
    responses = [
        await cors_client.get("/tags"),  # 200
        await cors_client.post(  # 201
            "/users", json={"user": {"username": "c", "email": "c@example.com", "password": "c-password"}}
        ),
        await cors_client.delete(f"/articles/{slug}/comments/{w['comment']}", headers=auth(w["bob"])),  # 204
        await cors_client.get("/user"),  # 401
        await cors_client.delete(f"/articles/{slug}", headers=auth(w["bob"])),  # 403
        await cors_client.get("/nope"),  # 404
        await cors_client.delete("/tags"),  # 405
        await cors_client.post("/users", content=big, headers={"Content-Type": "application/json"}),  # 413
        await cors_client.post("/users", json={}),  # 422
        await _preflight(cors_client, "/user", "GET"),  # preflight
        await _preflight(cors_client, "/user", "GET", OTHER_ORIGIN),  # refused preflight
    ]
    assert [r.status_code for r in responses] == [200, 201, 204, 401, 403, 404, 405, 413, 422, 204, 403]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.status_code


async def test_no_store_on_every_response_to_a_request_with_a_token(client: AsyncClient) -> None:
    w = await _world(client)
    slug = w["slug"]
    bob, alice = auth(w["bob"]), auth(w["alice"])
    responses = [
        await client.get("/user", headers=bob),  # 200
        await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=bob),  # 201
        await client.delete(f"/articles/{slug}/comments/{w['comment']}", headers=bob),  # 204
        await client.get("/user", headers=auth("garbage")),  # 401
        await client.delete(f"/articles/{slug}", headers=bob),  # 403
        await client.get("/articles/nope", headers=alice),  # 404
        await client.delete("/tags", headers=alice),  # 405
        await client.post(f"/articles/{slug}/comments", json={"comment": {}}, headers=bob),  # 422
        await client.get("/tags", headers=alice),  # a public endpoint, but the answer may depend on the caller
    ]
    assert [r.status_code for r in responses] == [200, 201, 204, 401, 403, 404, 405, 422, 200]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store", response.status_code
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "authorization" in _listed(response.headers.get("Vary"))


async def test_no_no_store_without_a_token(client: AsyncClient) -> None:
    response = await client.get("/tags")
    assert response.status_code == 200
    assert "no-store" not in response.headers.get("Cache-Control", "")


async def test_no_store_on_413_to_a_request_with_a_token(client: AsyncClient, settings: Settings) -> None:
    token = (await register(client))["token"]
    big = json.dumps({"user": {"bio": "x" * settings.max_body_size}}).encode()
    response = await client.put("/user", content=big, headers={**auth(token), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get("Cache-Control") == "no-store"


@pytest.fixture
def failing_cors_app(settings: Settings) -> Any:
    app = create_app(settings.model_copy(update={"cors_origins": [ORIGIN]}))
    boom = APIRouter()

    @boom.get("/api/boom")
    async def explode() -> None:
        raise RuntimeError("internals")

    app.include_router(boom)
    return app


async def test_500_with_a_token_has_nosniff(failing_cors_app: Any, database: Database) -> None:
    async with _client(failing_cors_app, database, raise_app_exceptions=False) as c:
        response = await c.get("/boom", headers={"Authorization": "Token whatever", "Origin": ORIGIN})
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_500_with_a_token_is_readable_by_the_page_and_not_stored(
    failing_cors_app: Any, database: Database
) -> None:
    async with _client(failing_cors_app, database, raise_app_exceptions=False) as c:
        response = await c.get("/boom", headers={"Authorization": "Token whatever", "Origin": ORIGIN})
    assert response.status_code == 500
    assert response.headers.get("Access-Control-Allow-Origin") == ORIGIN
    assert response.headers.get("Cache-Control") == "no-store"


@pytest.fixture
async def caching_client(settings: Settings, database: Database) -> AsyncIterator[AsyncClient]:
    app = create_app(settings.model_copy(update={"public_cache_max_age": 30}))
    async with _client(app, database) as c:
        yield c


async def test_anonymous_public_reads_are_cacheable_when_configured(caching_client: AsyncClient) -> None:
    client = caching_client
    alice = await register(client)
    slug = (await client.post("/articles", json={"article": article_payload()}, headers=auth(alice["token"]))).json()[
        "article"
    ]["slug"]
    for path in (
        "/tags",
        "/articles",
        f"/articles/{slug}",
        f"/articles/{slug}/comments",
        f"/profiles/{alice['username']}",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "public, max-age=30", path
        assert "authorization" in _listed(response.headers.get("Vary")), path
        signed_in = await client.get(path, headers=auth(alice["token"]))  # the caller's own view: never shared
        assert signed_in.headers["Cache-Control"] == "no-store", path
    # Not a public read: a miss, an error, the caller's own data, a write.
    assert "Cache-Control" not in (await client.get("/articles/nope")).headers
    assert "Cache-Control" not in (await client.get("/articles", params={"limit": 0})).headers
    assert "Cache-Control" not in (await client.get("/user")).headers
    assert "Cache-Control" not in (await client.post("/users/login", json={"user": {}})).headers


async def test_no_public_cache_header_by_default(client: AsyncClient) -> None:
    assert "Cache-Control" not in (await client.get("/tags")).headers
