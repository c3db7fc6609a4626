"""Contract A4, A7, A9, B2 (lists: GET /articles, the feed, GET /tags) over HTTP."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.helpers import auth, create_article, favorite, follow, register

EMPTY = {"articles": [], "articlesCount": 0}
LIST_ITEM_KEYS = {
    "slug",
    "title",
    "description",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}


async def list_articles(client: AsyncClient, token: str | None = None, **params: Any) -> dict[str, Any]:
    response = await client.get("/articles", params=params, headers=auth(token) if token else {})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def get_feed(client: AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/articles/feed", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def slugs(page: dict[str, Any]) -> list[str]:
    return [article["slug"] for article in page["articles"]]


# ---------------------------------------------------------------------------------------------------------------
# GET /articles


async def test_list_is_empty_without_articles(client: AsyncClient) -> None:
    assert await list_articles(client) == EMPTY


async def test_list_items_have_no_body_and_typed_fields(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    created = await create_article(client, alice["token"], tagList=["dragons"])
    page = await list_articles(client)
    assert set(page) == {"articles", "articlesCount"}
    assert page["articlesCount"] == 1
    assert type(page["articlesCount"]) is int
    (item,) = page["articles"]
    assert set(item) == LIST_ITEM_KEYS
    assert "body" not in item
    assert item == {k: v for k, v in created.items() if k != "body"}
    assert item["favorited"] is False
    assert item["author"]["following"] is False
    assert item["author"]["bio"] is None
    assert item["author"]["image"] is None


async def test_list_is_newest_first_later_created_first(client: AsyncClient) -> None:
    alice = await register(client)
    first = await create_article(client, alice["token"])
    second = await create_article(client, alice["token"])
    third = await create_article(client, alice["token"])
    assert slugs(await list_articles(client)) == [third["slug"], second["slug"], first["slug"]]


async def test_list_order_ignores_updates(client: AsyncClient) -> None:
    alice = await register(client)
    first = await create_article(client, alice["token"])
    second = await create_article(client, alice["token"])
    response = await client.put(
        f"/articles/{first['slug']}", json={"article": {"body": "x"}}, headers=auth(alice["token"])
    )
    assert response.status_code == 200
    assert slugs(await list_articles(client)) == [second["slug"], first["slug"]]


async def test_list_filters_by_tag(client: AsyncClient) -> None:
    alice = await register(client)
    dragons = await create_article(client, alice["token"], tagList=["dragons", "training"])
    await create_article(client, alice["token"], tagList=["training"])
    await create_article(client, alice["token"])
    page = await list_articles(client, tag="dragons")
    assert slugs(page) == [dragons["slug"]]
    assert page["articlesCount"] == 1
    assert page["articles"][0]["tagList"] == ["dragons", "training"]
    assert (await list_articles(client, tag="training"))["articlesCount"] == 2


async def test_list_filters_by_author(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    mine = [await create_article(client, alice["token"]) for _ in range(2)]
    await create_article(client, bob["token"])
    page = await list_articles(client, author="alice")
    assert slugs(page) == [mine[1]["slug"], mine[0]["slug"]]
    assert page["articlesCount"] == 2
    assert all(item["author"]["username"] == "alice" for item in page["articles"])


async def test_list_filters_by_favorited(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    liked = await create_article(client, alice["token"])
    await create_article(client, alice["token"])
    own = await create_article(client, bob["token"])
    await favorite(client, bob["token"], liked["slug"])
    await favorite(client, bob["token"], own["slug"])
    await favorite(client, alice["token"], own["slug"])
    page = await list_articles(client, favorited="bob")
    assert slugs(page) == [own["slug"], liked["slug"]]
    assert page["articlesCount"] == 2
    assert [item["favoritesCount"] for item in page["articles"]] == [2, 1]


async def test_list_filters_combine_with_and(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    target = await create_article(client, alice["token"], tagList=["dragons"])
    untagged = await create_article(client, alice["token"], tagList=["other"])
    by_bob = await create_article(client, bob["token"], tagList=["dragons"])
    not_liked = await create_article(client, alice["token"], tagList=["dragons"])
    for slug in (target["slug"], untagged["slug"], by_bob["slug"]):
        await favorite(client, carol["token"], slug)
    page = await list_articles(client, tag="dragons", author="alice", favorited="carol")
    assert slugs(page) == [target["slug"]]
    assert page["articlesCount"] == 1
    assert slugs(await list_articles(client, tag="dragons", author="alice")) == [not_liked["slug"], target["slug"]]
    assert slugs(await list_articles(client, tag="dragons", favorited="carol")) == [by_bob["slug"], target["slug"]]
    assert slugs(await list_articles(client, author="bob", favorited="carol")) == [by_bob["slug"]]
    assert await list_articles(client, tag="other", author="bob") == EMPTY


async def test_list_author_and_favorited_match_usernames_case_insensitively(client: AsyncClient) -> None:
    alice = await register(client, "Alice")
    created = await create_article(client, alice["token"])
    await favorite(client, alice["token"], created["slug"])
    assert slugs(await list_articles(client, author="alice")) == [created["slug"]]
    assert slugs(await list_articles(client, favorited="ALICE")) == [created["slug"]]


@pytest.mark.parametrize(
    "params",
    [
        {"tag": "nothing"},
        {"author": "nobody"},
        {"favorited": "nobody"},
        {"tag": "t" * 65},
        {"author": "a" * 51},
        {"favorited": "f" * 300},
        {"author": "dragons"},
    ],
)
async def test_list_unknown_filter_value_is_empty_not_404(client: AsyncClient, params: dict[str, str]) -> None:
    alice = await register(client, "alice")
    await create_article(client, alice["token"], tagList=["dragons"])
    assert await list_articles(client, **params) == EMPTY
    assert await list_articles(client, alice["token"], **params) == EMPTY


async def test_list_favorited_by_user_without_favorites_is_empty(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    await create_article(client, alice["token"])
    assert await list_articles(client, favorited="alice") == EMPTY


async def test_list_pages_with_limit_and_offset_and_counts_the_total(client: AsyncClient) -> None:
    alice = await register(client)
    created = [await create_article(client, alice["token"]) for _ in range(25)]
    newest_first = [article["slug"] for article in reversed(created)]

    default = await list_articles(client)
    assert slugs(default) == newest_first[:20]
    assert default["articlesCount"] == 25
    first = await list_articles(client, limit=10)
    second = await list_articles(client, limit=10, offset=10)
    third = await list_articles(client, limit=10, offset=20)
    assert slugs(first) + slugs(second) + slugs(third) == newest_first
    assert len(slugs(third)) == 5
    assert first["articlesCount"] == second["articlesCount"] == third["articlesCount"] == 25
    assert slugs(await list_articles(client, offset=5)) == newest_first[5:25]
    assert slugs(await list_articles(client, limit=100)) == newest_first
    assert slugs(await list_articles(client, limit=1, offset=24)) == [newest_first[24]]


@pytest.mark.parametrize("offset", [3, 4, 1000])
async def test_list_offset_beyond_total_is_empty_with_count(client: AsyncClient, offset: int) -> None:
    alice = await register(client)
    for _ in range(3):
        await create_article(client, alice["token"])
    assert await list_articles(client, offset=offset) == {"articles": [], "articlesCount": 3}


async def test_list_paging_applies_after_filters(client: AsyncClient) -> None:
    alice = await register(client)
    tagged = [await create_article(client, alice["token"], tagList=["dragons"]) for _ in range(3)]
    for _ in range(3):
        await create_article(client, alice["token"])
    page = await list_articles(client, tag="dragons", limit=2, offset=1)
    assert slugs(page) == [tagged[1]["slug"], tagged[0]["slug"]]
    assert page["articlesCount"] == 3


@pytest.mark.parametrize("path", ["/articles", "/articles/feed"])
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": "0"}, "limit", "must be greater than or equal to 1"),
        ({"limit": "-1"}, "limit", "must be greater than or equal to 1"),
        ({"limit": "101"}, "limit", "must be less than or equal to 100"),
        ({"limit": "abc"}, "limit", "is invalid"),
        ({"limit": "1.5"}, "limit", "is invalid"),
        ({"offset": "-1"}, "offset", "must be greater than or equal to 0"),
        ({"offset": "x"}, "offset", "is invalid"),
    ],
)
async def test_paging_parameters_are_validated(
    client: AsyncClient, path: str, params: dict[str, str], field: str, message: str
) -> None:
    alice = await register(client)
    response = await client.get(path, params=params, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": {field: [message]}}


async def test_paging_errors_are_reported_for_each_parameter(client: AsyncClient) -> None:
    response = await client.get("/articles", params={"limit": "0", "offset": "-1"})
    assert response.status_code == 422
    assert response.json() == {
        "errors": {"limit": ["must be greater than or equal to 1"], "offset": ["must be greater than or equal to 0"]}
    }


async def test_list_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    by_alice = await create_article(client, alice["token"])
    by_carol = await create_article(client, carol["token"])
    await follow(client, bob["token"], "alice")
    await favorite(client, bob["token"], by_carol["slug"])
    await favorite(client, alice["token"], by_carol["slug"])

    def flags(page: dict[str, Any]) -> dict[str, tuple[bool, bool, int]]:
        return {
            item["slug"]: (item["favorited"], item["author"]["following"], item["favoritesCount"])
            for item in page["articles"]
        }

    assert flags(await list_articles(client, bob["token"])) == {
        by_alice["slug"]: (False, True, 0),
        by_carol["slug"]: (True, False, 2),
    }
    assert flags(await list_articles(client, alice["token"])) == {
        by_alice["slug"]: (False, False, 0),
        by_carol["slug"]: (True, False, 2),
    }
    assert flags(await list_articles(client)) == {
        by_alice["slug"]: (False, False, 0),
        by_carol["slug"]: (False, False, 2),
    }


async def test_list_with_invalid_token_is_401(client: AsyncClient) -> None:
    response = await client.get("/articles", headers={"Authorization": "Token not.a.jwt"})
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


# ---------------------------------------------------------------------------------------------------------------
# GET /articles/feed


async def test_feed_without_token_is_401(client: AsyncClient) -> None:
    response = await client.get("/articles/feed")
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is missing"]}}


async def test_feed_is_empty_when_following_nobody(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    await create_article(client, alice["token"])
    await create_article(client, bob["token"])
    assert await get_feed(client, alice["token"]) == EMPTY


async def test_feed_has_only_followed_authors_newest_first(client: AsyncClient) -> None:
    viewer = await register(client, "viewer")
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    a1 = await create_article(client, alice["token"])
    b1 = await create_article(client, bob["token"])
    await create_article(client, carol["token"])
    a2 = await create_article(client, alice["token"])
    await create_article(client, viewer["token"])
    await follow(client, viewer["token"], "alice")
    await follow(client, viewer["token"], "bob")

    page = await get_feed(client, viewer["token"])
    assert slugs(page) == [a2["slug"], b1["slug"], a1["slug"]]
    assert page["articlesCount"] == 3
    for item in page["articles"]:
        assert set(item) == LIST_ITEM_KEYS
        assert item["author"]["following"] is True
        assert item["favorited"] is False


async def test_feed_drops_unfollowed_authors(client: AsyncClient) -> None:
    viewer = await register(client)
    alice = await register(client, "alice")
    await create_article(client, alice["token"])
    await follow(client, viewer["token"], "alice")
    assert (await get_feed(client, viewer["token"]))["articlesCount"] == 1
    response = await client.delete("/profiles/alice/follow", headers=auth(viewer["token"]))
    assert response.status_code == 200
    assert await get_feed(client, viewer["token"]) == EMPTY


async def test_feed_pages_and_counts_the_total(client: AsyncClient) -> None:
    viewer = await register(client)
    alice = await register(client, "alice")
    other = await register(client)
    created = [await create_article(client, alice["token"]) for _ in range(5)]
    await create_article(client, other["token"])
    await follow(client, viewer["token"], "alice")
    newest_first = [article["slug"] for article in reversed(created)]

    first = await get_feed(client, viewer["token"], limit=2)
    second = await get_feed(client, viewer["token"], limit=2, offset=2)
    third = await get_feed(client, viewer["token"], limit=2, offset=4)
    assert slugs(first) + slugs(second) + slugs(third) == newest_first
    assert first["articlesCount"] == second["articlesCount"] == third["articlesCount"] == 5
    assert await get_feed(client, viewer["token"], offset=5) == {"articles": [], "articlesCount": 5}


async def test_feed_reflects_the_viewers_favorites(client: AsyncClient) -> None:
    viewer = await register(client)
    alice = await register(client, "alice")
    liked = await create_article(client, alice["token"])
    other = await create_article(client, alice["token"])
    await follow(client, viewer["token"], "alice")
    await favorite(client, viewer["token"], liked["slug"])
    flags = {item["slug"]: item["favorited"] for item in (await get_feed(client, viewer["token"]))["articles"]}
    assert flags == {liked["slug"]: True, other["slug"]: False}


async def test_feed_is_never_taken_as_a_slug(client: AsyncClient) -> None:
    alice = await register(client)
    article = await create_article(client, alice["token"], title="Feed")
    assert article["slug"] != "feed"
    fetched = await client.get(f"/articles/{article['slug']}")
    assert fetched.status_code == 200
    assert fetched.json() == {"article": article}
    assert await get_feed(client, alice["token"]) == EMPTY
    anonymous = await client.get("/articles/feed")
    assert anonymous.status_code == 401


@pytest.mark.parametrize("title", ["Feed", "feed!", "FEED"])
async def test_retitling_to_feed_never_takes_the_feed_route(client: AsyncClient, title: str) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    response = await client.put(
        f"/articles/{created['slug']}", json={"article": {"title": title}}, headers=auth(alice["token"])
    )
    assert response.status_code == 200
    slug = response.json()["article"]["slug"]
    assert slug != "feed"
    assert (await client.get(f"/articles/{slug}")).json()["article"]["title"] == title


# ---------------------------------------------------------------------------------------------------------------
# GET /tags


async def test_tags_empty_without_articles(client: AsyncClient) -> None:
    response = await client.get("/tags")
    assert response.status_code == 200
    assert response.json() == {"tags": []}


async def test_tags_appear_at_once_most_used_first_then_by_name(client: AsyncClient) -> None:
    alice = await register(client)
    await create_article(client, alice["token"], tagList=["zebra", "beta"])
    assert (await client.get("/tags")).json() == {"tags": ["beta", "zebra"]}
    await create_article(client, alice["token"], tagList=["zebra", "alpha"])
    await create_article(client, alice["token"], tagList=["zebra", "alpha", "gamma"])
    assert (await client.get("/tags")).json() == {"tags": ["zebra", "alpha", "beta", "gamma"]}


async def test_tags_are_never_truncated(client: AsyncClient) -> None:
    alice = await register(client)
    names = [f"tag-{i:02d}" for i in range(30)]
    for start in range(0, 30, 10):
        await create_article(client, alice["token"], tagList=names[start : start + 10])
    assert (await client.get("/tags")).json() == {"tags": names}


async def test_tags_follow_updates_and_deletes(client: AsyncClient) -> None:
    alice = await register(client)
    first = await create_article(client, alice["token"], tagList=["old", "shared"])
    second = await create_article(client, alice["token"], tagList=["shared"])
    response = await client.put(
        f"/articles/{first['slug']}", json={"article": {"tagList": ["new", "shared"]}}, headers=auth(alice["token"])
    )
    assert response.status_code == 200
    assert (await client.get("/tags")).json() == {"tags": ["shared", "new"]}
    await client.delete(f"/articles/{first['slug']}", headers=auth(alice["token"]))
    assert (await client.get("/tags")).json() == {"tags": ["shared"]}
    await client.delete(f"/articles/{second['slug']}", headers=auth(alice["token"]))
    assert (await client.get("/tags")).json() == {"tags": []}


async def test_nul_in_filters_or_slug_matches_nothing(client: AsyncClient) -> None:
    for query in ("tag=a%00b", "author=a%00b", "favorited=a%00b"):
        response = await client.get(f"/articles?{query}")
        assert response.status_code == 200, query
        assert response.json() == {"articles": [], "articlesCount": 0}
    response = await client.get("/articles/a%00b")
    assert response.status_code == 404
    assert response.json() == {"errors": {"article": ["not found"]}}
    response = await client.get("/articles/a%00b/comments")
    assert response.status_code == 404
