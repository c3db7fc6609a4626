"""Helpers shared by the articles tests: they act as a client would, over HTTP."""

import itertools
from typing import Any

from httpx import AsyncClient

from tests.helpers import auth

_seq = itertools.count(1)


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
