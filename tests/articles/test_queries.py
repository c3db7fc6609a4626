"""Query budget: every read of articles and tags is a fixed number of statements, whatever the page size.

N+1 regressions fail here: a page of 100 costs exactly what a page of 1 costs.
"""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.helpers import auth, create_article, favorite, follow, register

AUTH_SELECTS = 1  # the token's user (and its session), loaded in one statement
LIST_SELECTS = 2  # the total (a maintained counter) and the page (articles, authors, counts, flags and tags)


async def seed(client: AsyncClient) -> dict[str, Any]:
    """30 articles by two authors, tagged, favorited by several users; the viewer follows one author."""
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    viewer = await register(client, "viewer")
    articles = []
    for i in range(30):
        author = alice if i % 2 else bob
        articles.append(await create_article(client, author["token"], tagList=["common", f"tag{i % 5}", f"own{i}"]))
    for i, article in enumerate(articles):
        if i % 3 == 0:
            await favorite(client, viewer["token"], article["slug"])
        if i % 2 == 0:
            await favorite(client, alice["token"], article["slug"])
    await follow(client, viewer["token"], "alice")
    return {"alice": alice, "bob": bob, "viewer": viewer, "articles": articles}


async def measure(
    client: AsyncClient, count_statements: Any, path: str, token: str | None, **params: Any
) -> tuple[int, int, Any]:
    headers = auth(token) if token else {}
    with count_statements() as counter:
        response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return counter.selects, counter.total, response.json()


FILTERS: list[tuple[dict[str, str], int]] = [
    ({}, 30),
    ({"tag": "common"}, 30),
    ({"tag": "tag1"}, 6),
    ({"author": "alice"}, 15),
    ({"favorited": "alice"}, 15),
    ({"favorited": "viewer"}, 10),
    ({"tag": "common", "author": "bob", "favorited": "viewer"}, 5),
]


@pytest.mark.parametrize("viewer", [True, False])
async def test_list_costs_the_same_for_any_page_size(client: AsyncClient, count_statements: Any, viewer: bool) -> None:
    data = await seed(client)
    token = data["viewer"]["token"] if viewer else None
    expected = LIST_SELECTS + (AUTH_SELECTS if viewer else 0)
    for params, expected_count in FILTERS:  # one seed for every filter: registering users is the slow part
        small = await measure(client, count_statements, "/articles", token, limit=1, **params)
        large = await measure(client, count_statements, "/articles", token, limit=100, **params)
        assert len(small[2]["articles"]) == 1, params
        assert len(large[2]["articles"]) == expected_count == large[2]["articlesCount"], params
        assert small[0] == large[0] == expected, params
        assert small[1] == large[1] == expected, params  # reads send nothing but SELECTs


async def test_feed_costs_the_same_for_any_page_size(client: AsyncClient, count_statements: Any) -> None:
    data = await seed(client)
    token = data["viewer"]["token"]
    small = await measure(client, count_statements, "/articles/feed", token, limit=1)
    large = await measure(client, count_statements, "/articles/feed", token, limit=100)
    assert len(small[2]["articles"]) == 1
    assert len(large[2]["articles"]) == large[2]["articlesCount"] == 15
    assert small[0] == large[0] == small[1] == large[1] == AUTH_SELECTS + LIST_SELECTS


@pytest.mark.parametrize("path", ["/articles", "/articles/feed"])
async def test_empty_page_costs_only_the_count(client: AsyncClient, count_statements: Any, path: str) -> None:
    data = await seed(client)
    selects, total, body = await measure(client, count_statements, path, data["viewer"]["token"], offset=100)
    assert body["articles"] == []
    assert selects == total == AUTH_SELECTS + 1
    selects, _, body = await measure(client, count_statements, "/articles", None, tag="nothing")
    assert body == {"articles": [], "articlesCount": 0}
    assert selects == 1


async def test_tags_are_one_statement(client: AsyncClient, count_statements: Any) -> None:
    await seed(client)
    selects, total, body = await measure(client, count_statements, "/tags", None)
    assert len(body["tags"]) == 30 + 5 + 1
    assert body["tags"][0] == "common"
    assert selects == total == 1


@pytest.mark.parametrize("viewer", [True, False])
async def test_get_article_is_one_statement(client: AsyncClient, count_statements: Any, viewer: bool) -> None:
    data = await seed(client)
    token = data["viewer"]["token"] if viewer else None
    slug = data["articles"][3]["slug"]
    selects, total, body = await measure(client, count_statements, f"/articles/{slug}", token)
    assert (body["article"]["favoritesCount"], body["article"]["favorited"]) == (1, viewer)
    assert selects == total == 1 + (AUTH_SELECTS if viewer else 0)


async def test_writes_cost_a_fixed_number_of_statements(client: AsyncClient, count_statements: Any) -> None:
    data = await seed(client)
    token = data["alice"]["token"]
    slug = data["articles"][1]["slug"]
    with count_statements() as favorited:
        assert (await client.post(f"/articles/{slug}/favorite", headers=auth(data["bob"]["token"]))).status_code == 200
    with count_statements() as updated:
        response = await client.put(f"/articles/{slug}", json={"article": {"body": "x"}}, headers=auth(token))
        assert response.status_code == 200
    with count_statements() as deleted:
        assert (await client.delete(f"/articles/{slug}", headers=auth(token))).status_code == 204
    # the token's user, the article's id, the insert, two counters (article, fan), the article as now seen
    assert (favorited.selects, favorited.total) == (3, 6)
    # the token's user, the article (ORM, to change it), the update, the article as now seen
    assert (updated.selects, updated.total) == (3, 4)
    # the token's user, the article's id, its row lock, its tags; counters (total, tags, author, fans), the delete
    assert (deleted.selects, deleted.total) == (4, 9)


@pytest.mark.parametrize("tags", [1, 20])
async def test_create_costs_the_same_for_any_number_of_tags(
    client: AsyncClient, count_statements: Any, tags: int
) -> None:
    alice = await register(client)
    await create_article(client, alice["token"], tagList=["existing"])
    payload = {
        "title": "Tagged",
        "description": "d",
        "body": "b",
        "tagList": ["existing"] + [f"new{i}" for i in range(tags - 1)],
    }
    with count_statements() as created:
        response = await client.post("/articles", json={"article": payload}, headers=auth(alice["token"]))
    assert response.status_code == 201
    assert len(response.json()["article"]["tagList"]) == tags
    # the token's user, the slug check, the tag ids; the article, the new tags, the article's tag links, and
    # three counters (every article, the tags, the author's articles)
    assert (created.selects, created.total) == (3, 9)
