"""Contract B3, B3a (headers), B6 and the error layer, over HTTP."""

import logging
from typing import Any

import pytest
from fastapi import APIRouter
from httpx import ASGITransport, AsyncClient

from service.core.config import Settings
from service.core.db import Database
from service.main import create_app
from tests.helpers import PASSWORD, auth, register, serving


async def test_unknown_route_is_404_envelope(client: AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"errors": {"route": ["not found"]}}


async def test_wrong_method_is_405_with_allow(client: AsyncClient) -> None:
    response = await client.delete("/users/login")
    assert response.status_code == 405
    assert response.json() == {"errors": {"method": ["not allowed"]}}
    assert "POST" in response.headers["Allow"]


async def test_body_over_limit_is_413(client: AsyncClient, settings: Settings) -> None:
    big = b'{"user": {"username": "' + b"a" * (settings.max_body_size + 10) + b'"}}'
    response = await client.post("/users", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"errors": {"request": ["is too large"]}}


async def test_streamed_body_over_limit_is_413(client: AsyncClient, settings: Settings) -> None:
    async def chunks() -> Any:
        for _ in range(settings.max_body_size // 1024 + 2):
            yield b"a" * 1024

    response = await client.post("/users", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"errors": {"request": ["is too large"]}}


@pytest.fixture
def failing_app(app: Any) -> Any:
    boom = APIRouter()

    @boom.get("/api/boom")
    async def explode() -> None:
        raise RuntimeError("secret internals: SELECT * FROM users")

    app.include_router(boom)
    return app


async def test_unexpected_error_is_clean_500_with_request_id(
    failing_app: Any, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    transport = ASGITransport(app=serving(failing_app, database), raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/api/boom", headers={"X-Request-ID": "req-500-check"})
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}
    assert "SELECT" not in response.text
    assert response.headers["X-Request-ID"] == "req-500-check"
    failures = [r for r in caplog.records if r.name == "service.errors"]
    assert failures
    assert getattr(failures[0], "request_id", None) == "req-500-check"
    assert failures[0].exc_info is not None


async def test_request_id_is_echoed_or_generated(client: AsyncClient) -> None:
    given = await client.get("/user", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/user")
    assert len(generated.headers["X-Request-ID"]) == 32
    hostile = await client.get("/user", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_nosniff_on_every_response_and_no_store_with_token(client: AsyncClient) -> None:
    anonymous = await client.get("/nope")
    assert anonymous.headers["X-Content-Type-Options"] == "nosniff"
    user = await register(client)
    response = await client.get("/user", headers=auth(user["token"]))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


async def test_access_log_line_per_request(client: AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    user = await register(client)
    caplog.clear()
    await client.get("/user", headers={**auth(user["token"]), "X-Request-ID": "log-me"})
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1
    line: Any = lines[0]
    assert (line.method, line.route, line.status, line.request_id) == ("GET", "/api/user", 200, "log-me")
    assert line.user_id is not None
    assert line.duration_ms >= 0


async def test_logs_never_contain_passwords_or_tokens(
    client: AsyncClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    user = await register(client, "secretive")
    login = await client.post("/users/login", json={"user": {"email": user["email"], "password": PASSWORD}})
    token = login.json()["user"]["token"]
    await client.put("/user", headers=auth(token), json={"user": {"password": "another-secret-pw"}})
    await client.post("/users/login", json={"user": {"email": user["email"], "password": "wrong-guess-pw"}})
    await client.get("/user", headers=auth("forged.token.value"))
    handler_output = capsys.readouterr().err
    texts = [handler_output, *(r.getMessage() for r in caplog.records), *(str(vars(r)) for r in caplog.records)]
    for secret in (PASSWORD, "another-secret-pw", "wrong-guess-pw", token, user["token"], "forged.token.value"):
        assert all(secret not in text for text in texts), secret


async def test_health_live(client: AsyncClient) -> None:
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        response = await root.get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_health_ready_checks_database(client: AsyncClient) -> None:
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        response = await root.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


async def test_health_ready_503_when_database_down(settings: Settings) -> None:
    from service.core.db import build_database, create_engine_for

    dead = create_engine_for("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    app = serving(create_app(settings), build_database(dead))
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as c:
        ready = await c.get("/health/ready")
        api = await c.post("/api/users/login", json={"user": {"email": "a@b.co", "password": "password1"}})
    await dead.dispose()
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
    assert ready.headers["Retry-After"]
    assert api.status_code == 503
    assert api.json() == {"errors": {"database": ["unavailable"]}}
    assert api.headers["Retry-After"]


async def test_docs_are_served_offline(client: AsyncClient) -> None:
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        for page in ("/docs", "/redoc"):
            html = (await root.get(page)).text
            assert "http://" not in html.replace("http://test", "")
            assert "https://" not in html, page
        swagger = await root.get("/docs-assets/swagger-ui-bundle.js")
        redoc = await root.get("/docs-assets/redoc.standalone.js")
    assert swagger.status_code == 200
    assert len(swagger.content) > 100_000
    assert redoc.status_code == 200
    assert b"cdn.redoc.ly" not in redoc.content  # its footer logo is re-pointed at our own icon


async def test_openapi_documents_error_envelope_and_auth(client: AsyncClient) -> None:
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        schema = (await root.get("/openapi.json")).json()
    assert "ErrorBody" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["TokenAuth"]["scheme"] == "bearer"
    get_user = schema["paths"]["/api/user"]["get"]
    assert get_user["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    register_op = schema["paths"]["/api/users"]["post"]
    assert {"201", "409", "422"} <= set(register_op["responses"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"].get("$ref", "")
                    assert ref.endswith(("/ErrorBody", "/Health")), (path, method, code)


@pytest.mark.parametrize("text", ["\\ud800", "a\\u0000b", "\\udfffx"])
async def test_text_no_database_can_store_is_422_not_500(client: AsyncClient, text: str) -> None:
    """Lone surrogates and NUL arrive through JSON escapes; they are refused as input, never at insert time."""
    login = await client.post(
        "/users/login",
        content=f'{{"user": {{"email": "{text}@x.io", "password": "password1"}}}}',
        headers={"Content-Type": "application/json"},
    )
    assert login.status_code == 422
    assert login.json() == {"errors": {"email": ["is invalid"]}}
    user = await register(client)
    update = await client.put(
        "/user",
        content=f'{{"user": {{"bio": "{text}"}}}}',
        headers={**auth(user["token"]), "Content-Type": "application/json"},
    )
    assert update.status_code == 422
    assert update.json() == {"errors": {"bio": ["is invalid"]}}


async def test_body_that_is_not_utf8_is_422_on_the_envelope_or_401_without_token(client: AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    register_response = await client.post("/users", content=b"\x86\xfd", headers=headers)
    assert register_response.status_code == 422
    assert register_response.json() == {"errors": {"user": ["can't be blank"]}}
    anonymous = await client.post("/articles", content=b"\x86\xfd", headers=headers)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"errors": {"token": ["is missing"]}}
    user = await register(client)
    signed_in = await client.post("/articles", content=b"\x86\xfd", headers={**headers, **auth(user["token"])})
    assert signed_in.status_code == 422
    assert signed_in.json() == {"errors": {"article": ["can't be blank"]}}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/articles", "GET, OPTIONS, POST"),
        ("/articles/some-slug", "DELETE, GET, OPTIONS, PUT"),
        ("/user", "GET, OPTIONS, PUT"),
        ("/articles/some-slug/favorite", "DELETE, OPTIONS, POST"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(client: AsyncClient, path: str, allowed: str) -> None:
    response = await client.patch(path, json={})
    assert response.status_code == 405
    assert response.json() == {"errors": {"method": ["not allowed"]}}
    assert response.headers["Allow"] == allowed


async def test_openapi_marks_optional_auth_and_keeps_field_rules(client: AsyncClient) -> None:
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        schema = (await root.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in (
        ("/api/articles", "get"),
        ("/api/articles/{slug}", "get"),
        ("/api/profiles/{username}", "get"),
        ("/api/articles/{slug}/comments", "get"),
    ):
        assert paths[path][method]["security"] == [{"TokenAuth": []}, {}], path
    assert paths["/api/articles/feed"]["get"]["security"] == [{"TokenAuth": []}]
    assert "security" not in paths["/api/tags"]["get"]
    username = schema["components"]["schemas"]["UserCreate"]["properties"]["username"]
    assert (username["maxLength"], username["pattern"]) == (50, "^[A-Za-z0-9_-]+$")
    title = schema["components"]["schemas"]["ArticleCreate"]["properties"]["title"]
    assert title["maxLength"] == 255


async def test_metrics_count_requests_by_route_template(client: AsyncClient) -> None:
    await client.get("/articles")
    await client.get("/articles/a-secret-slug")
    await client.get("/no/such/route")
    async with AsyncClient(transport=client._transport, base_url="http://test") as root:
        response = await root.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="GET",route="/api/articles",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/api/articles/{slug}",status="404"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/articles"}' in text
    assert "a-secret-slug" not in text  # templates only: bounded label values, no ids in metrics
    assert "process_cpu_seconds_total" in text
