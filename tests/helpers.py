"""Helpers that act as a client would: register over HTTP, build auth headers."""

import itertools
import re
from typing import Any

from httpx import AsyncClient

from service.core.db import Database

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery"
# How every timestamp is serialised: ISO 8601, sub-second digits, a zone.
ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z$")


def auth(token: str, scheme: str = "Token") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


async def register(client: AsyncClient, username: str | None = None, **extra: Any) -> dict[str, Any]:
    """Register a user over HTTP and return the ``user`` object (with ``token``)."""
    n = next(_seq)
    username = username or f"user{n}"
    payload = {"username": username, "email": f"{username.lower()}@example.com", "password": PASSWORD, **extra}
    response = await client.post("/users", json={"user": payload})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


def article_payload(**fields: Any) -> dict[str, Any]:
    """A valid ``article`` object with a unique title; ``fields`` override or add keys."""
    n = next(_seq)
    return {"title": f"Article {n}", "description": f"About {n}", "body": f"Body of {n}", **fields}


async def create_article(client: AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    """Create an article over HTTP and return the ``article`` object."""
    response = await client.post("/articles", json={"article": article_payload(**fields)}, headers=auth(token))
    assert response.status_code == 201, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


async def follow(client: AsyncClient, token: str, username: str) -> None:
    response = await client.post(f"/profiles/{username}/follow", headers=auth(token))
    assert response.status_code == 200, response.text


async def favorite(client: AsyncClient, token: str, slug: str) -> dict[str, Any]:
    response = await client.post(f"/articles/{slug}/favorite", headers=auth(token))
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


def serving(app: Any, database: Database) -> Any:
    """The app as a server runs it, with ``database`` as its lifespan state: uvicorn copies that state into every
    request's scope, and ASGITransport runs no lifespan, so this does it. No dependency is overridden."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        scope["state"] = {**scope.get("state", {}), "database": database}
        await app(scope, receive, send)

    return asgi
