"""Helpers that act as a client would: register over HTTP, build auth headers."""

import itertools
from typing import Any

from httpx import AsyncClient

_seq = itertools.count(1)
PASSWORD = "correct-horse-battery"


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
