"""The benchmark's ceiling (bench/ceiling.py) answers byte for byte what the service answers, so comparing their
throughput compares equal work. PostgreSQL only: the ceiling is asyncpg."""

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.ceiling import Ceiling
from service.articles import counters
from service.core.config import Settings
from tests.helpers import auth, create_article, favorite, follow, register


@asynccontextmanager
async def started(app: Ceiling) -> AsyncIterator[AsyncClient]:
    """Run the ceiling's ASGI lifespan (it opens its pool there), then hand out a client."""
    to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    to_test: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan"}, to_app.get, to_test.put))
    await to_app.put({"type": "lifespan.startup"})
    assert (await to_test.get())["type"] == "lifespan.startup.complete"
    try:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://ceiling/api") as client:
            yield client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await to_test.get())["type"] == "lifespan.shutdown.complete"
        await lifespan


@pytest.fixture
async def ceiling(
    committing_client: AsyncClient, engine: AsyncEngine, settings: Settings
) -> AsyncIterator[AsyncClient]:
    dsn = make_url(engine.url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with started(Ceiling(dsn, settings.jwt_secret(), pool_size=4)) as client:
        yield client


async def _content(client: AsyncClient) -> dict[str, Any]:
    """A little of everything a body can carry: escapes, non-ASCII, null and set bio/image, empty lists."""
    alice = await register(client, "alice")
    bob = await register(client, "Bob_2")
    viewer = await register(client, "viewer")
    await client.put(
        "/user",
        json={"user": {"bio": 'Says "hi" \\ <b>bold</b>\n\ttabbed \u2013 ünïcödé 🚀', "image": "https://x.io/a.png"}},
        headers=auth(alice["token"]),
    )
    titles = ["Crème brûlée: 10 ways!", 'Quotes "and" \\backslashes\\', "Emoji 🚀 and \u2028 separators", "Plain"]
    articles = []
    for i, title in enumerate(titles * 3):
        author = alice if i % 2 else bob
        tags = [["python", "ünï"], ["python"], [], ["rust", "python", "Z", "a"]][i % 4]
        articles.append(await create_article(client, author["token"], title=title, tagList=tags, body=f"Body {i}\n"))
    for article in articles[::2]:
        await favorite(client, viewer["token"], article["slug"])
    await favorite(client, alice["token"], articles[1]["slug"])
    await follow(client, viewer["token"], "alice")
    for text in ("First! 🎉", 'A "quoted" comment\nwith a newline'):
        response = await client.post(
            f"/articles/{articles[1]['slug']}/comments", json={"comment": {"body": text}}, headers=auth(bob["token"])
        )
        assert response.status_code == 201
    return {"viewer": viewer, "articles": articles}


async def test_ceiling_answers_exactly_what_the_service_answers(
    committing_client: AsyncClient, ceiling: AsyncClient
) -> None:
    data = await _content(committing_client)
    slugs = [a["slug"] for a in data["articles"][:4]]
    reads: list[tuple[str, dict[str, Any]]] = [
        ("/articles", {}),
        ("/articles", {"limit": 3}),
        ("/articles", {"limit": 5, "offset": 2}),
        ("/articles", {"offset": 100}),
        ("/articles", {"tag": "python"}),
        ("/articles", {"tag": "python", "limit": 2, "offset": 1}),
        ("/articles", {"tag": "ünï"}),
        ("/articles", {"tag": "nothing"}),
        ("/articles", {"author": "ALICE"}),
        ("/articles", {"author": "nobody"}),
        ("/articles", {"favorited": "viewer"}),
        ("/articles", {"tag": "python", "author": "bob_2"}),
        ("/articles", {"tag": "rust", "favorited": "viewer"}),
        ("/articles", {"author": "alice", "favorited": "alice"}),
        ("/articles", {"tag": "python", "author": "bob_2", "favorited": "viewer"}),
        ("/articles", {"limit": 0}),
        ("/articles", {"limit": 101}),
        ("/articles", {"offset": -1}),
        ("/articles/feed", {}),
        ("/articles/feed", {"limit": 2, "offset": 1}),
        *((f"/articles/{slug}", {}) for slug in slugs),
        *((f"/articles/{slug}/comments", {}) for slug in slugs),
        ("/articles/no-such-article", {}),
        ("/articles/no-such-article/comments", {}),
        ("/profiles/alice", {}),
        ("/profiles/BOB_2", {}),
        ("/profiles/nobody", {}),
        ("/tags", {}),
    ]
    tokens: list[dict[str, str]] = [{}, auth(data["viewer"]["token"]), auth(data["viewer"]["token"], "Bearer")]
    compared = 0
    for headers in [*tokens, {"Authorization": "Token not.a.jwt"}]:
        for path, params in reads:
            expected = await committing_client.get(path, params=params, headers=headers)
            actual = await ceiling.get(path, params=params, headers=headers)
            assert (actual.status_code, actual.content) == (expected.status_code, expected.content), (path, params)
            compared += expected.status_code == 200
    assert compared >= 80  # most comparisons are of real content, not of errors


async def test_ceiling_writes_keep_the_same_counters(
    committing_client: AsyncClient, ceiling: AsyncClient, engine: AsyncEngine
) -> None:
    registered = await ceiling.post(
        "/users", json={"user": {"username": "writer", "email": "writer@example.com", "password": "long-enough"}}
    )
    assert registered.status_code == 201
    login = await ceiling.post(
        "/users/login", json={"user": {"email": "WRITER@example.com", "password": "long-enough"}}
    )
    assert login.status_code == 200
    token = login.json()["user"]["token"]
    created = await ceiling.post(
        "/articles",
        json={"article": {"title": "Written", "description": "d", "body": "b", "tagList": ["b", "a", "b"]}},
        headers=auth(token),
    )
    assert created.status_code == 201
    slug = created.json()["article"]["slug"]
    assert (
        await ceiling.post(f"/articles/{slug}/comments", json={"comment": {"body": "c"}}, headers=auth(token))
    ).status_code == 201
    favorited = await ceiling.post(f"/articles/{slug}/favorite", headers=auth(token))
    assert favorited.json()["article"]["favoritesCount"] == 1
    served = await committing_client.get(f"/articles/{slug}", headers=auth(token))  # the service reads them back
    assert served.json() == favorited.json()
    assert created.json()["article"]["tagList"] == ["a", "b"]
    async with engine.connect() as conn:
        assert await counters.differences(conn) == []
