"""Contract A1 and B1 across every endpoint: authentication is checked before anything else."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from service.users.models import User
from tests.helpers import PASSWORD, auth, register

TOKEN_MISSING = {"errors": {"token": ["is missing"]}}
TOKEN_INVALID = {"errors": {"token": ["is invalid"]}}

# Every protected endpoint, aimed at things that do not exist, each with a body that would be valid.
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/user", None),
    ("PUT", "/user", {"user": {"bio": "hello"}}),
    ("POST", "/profiles/nobody-here/follow", None),
    ("DELETE", "/profiles/nobody-here/follow", None),
    ("GET", "/articles/feed", None),
    ("POST", "/articles", {"article": {"title": "t", "description": "d", "body": "b"}}),
    ("PUT", "/articles/no-such-slug", {"article": {"body": "b"}}),
    ("DELETE", "/articles/no-such-slug", None),
    ("POST", "/articles/no-such-slug/favorite", None),
    ("DELETE", "/articles/no-such-slug/favorite", None),
    ("POST", "/articles/no-such-slug/comments", {"comment": {"body": "b"}}),
    ("DELETE", "/articles/no-such-slug/comments/999999", None),
]
OPTIONAL: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/articles", None),
    ("GET", "/articles/no-such-slug", None),
    ("GET", "/profiles/nobody-here", None),
    ("GET", "/articles/no-such-slug/comments", None),
]
WITH_BODY = [e for e in PROTECTED if e[2] is not None]


def _id(endpoint: tuple[str, str, Any]) -> str:
    return f"{endpoint[0]} {endpoint[1]}"


@pytest.mark.parametrize("endpoint", PROTECTED, ids=_id)
async def test_no_token_is_401_missing_before_anything_else(
    client: AsyncClient, endpoint: tuple[str, str, dict[str, Any] | None]
) -> None:
    method, path, body = endpoint
    response = await client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    assert response.headers["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=_id)
@pytest.mark.parametrize("content", [b"", b"{}", b'{"user": {}, "article": {}, "comment": {}}'])
async def test_no_token_is_401_even_with_an_invalid_body(
    client: AsyncClient, endpoint: tuple[str, str, dict[str, Any] | None], content: bytes
) -> None:
    method, path, _ = endpoint
    response = await client.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING


@pytest.mark.parametrize("endpoint", WITH_BODY, ids=_id)
async def test_no_token_is_401_even_with_unreadable_json(
    client: AsyncClient, endpoint: tuple[str, str, dict[str, Any] | None]
) -> None:
    method, path, _ = endpoint
    response = await client.request(method, path, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING


@pytest.mark.parametrize("endpoint", PROTECTED + OPTIONAL, ids=_id)
@pytest.mark.parametrize("header", ["Token garbage", "Bearer garbage.garbage.garbage", "Token", "Basic Zm9vOmJhcg=="])
async def test_garbage_token_is_401_invalid_everywhere(
    client: AsyncClient, endpoint: tuple[str, str, dict[str, Any] | None], header: str
) -> None:
    method, path, body = endpoint
    response = await client.request(method, path, json=body, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID
    assert response.headers["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize("endpoint", PROTECTED + OPTIONAL, ids=_id)
async def test_token_of_a_deleted_user_is_invalid(
    client: AsyncClient, endpoint: tuple[str, str, dict[str, Any] | None], session: AsyncSession
) -> None:
    ghost = await register(client, "ghost")
    await session.execute(delete(User).where(User.username == "ghost"))
    await session.commit()
    method, path, body = endpoint
    response = await client.request(method, path, json=body, headers=auth(ghost["token"]))
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID


async def _works(client: AsyncClient, token: str, username: str) -> None:
    """The token authenticates a read and a write at once."""
    me = await client.get("/user", headers=auth(token))
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == username
    follow = await client.post("/profiles/target/follow", headers=auth(token))
    assert follow.status_code == 200, follow.text
    assert follow.json()["profile"]["following"] is True


async def test_register_token_works_at_once(client: AsyncClient) -> None:
    await register(client, "target")
    user = await register(client, "newcomer")
    await _works(client, user["token"], "newcomer")


async def test_login_token_works_at_once(client: AsyncClient) -> None:
    await register(client, "target")
    user = await register(client, "returning")
    login = await client.post("/users/login", json={"user": {"email": user["email"], "password": PASSWORD}})
    assert login.status_code == 200
    await _works(client, login.json()["user"]["token"], "returning")


@pytest.mark.parametrize(
    "change",
    [
        {"bio": "new bio"},
        {"username": "renamed"},
        {"email": "renamed@example.com"},
        {"username": "renamed", "email": "renamed@example.com"},
        {"password": "a-brand-new-password"},
    ],
)
async def test_put_user_token_works_at_once(client: AsyncClient, change: dict[str, str]) -> None:
    await register(client, "target")
    user = await register(client, "changer")
    response = await client.put("/user", json={"user": change}, headers=auth(user["token"]))
    assert response.status_code == 200, response.text
    new_token = response.json()["user"]["token"]
    await _works(client, new_token, change.get("username", "changer"))
    # the session that made the change lives on (A5): its old token keeps working as well
    assert (await client.get("/user", headers=auth(user["token"]))).status_code == 200
