"""Contract A1-A4, A7, B1, B2 (single articles: create, get, update, delete, favorites) over HTTP."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession

from service.users.models import Role, User
from tests.helpers import ISO_TIMESTAMP, article_payload, auth, create_article, favorite, follow, register

SINGLE_ARTICLE_KEYS = {
    "slug",
    "title",
    "description",
    "body",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}
NOT_FOUND = {"errors": {"article": ["not found"]}}
FORBIDDEN = {"errors": {"article": ["forbidden"]}}
TOKEN_MISSING = {"errors": {"token": ["is missing"]}}
TOKEN_INVALID = {"errors": {"token": ["is invalid"]}}
ARTICLE_BLANK = {"errors": {"article": ["can't be blank"]}}
TAGS_INVALID = {"errors": {"tagList": ["is invalid"]}}
BAD_TOKEN = "Token not.a.jwt"


def blank_value(payload: dict[str, Any], field: str, blank: Any) -> dict[str, Any]:
    payload = dict(payload)
    if blank == "missing":
        del payload[field]
    else:
        payload[field] = blank
    return payload


# ---------------------------------------------------------------------------------------------------------------
# Create


async def test_create_returns_201_and_full_article(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    payload = {"title": "How to train your dragon", "description": "Ever wonder how?", "body": "You have to believe"}
    response = await client.post("/articles", json={"article": payload}, headers=auth(alice["token"]))
    assert response.status_code == 201
    article = response.json()["article"]
    assert set(article) == SINGLE_ARTICLE_KEYS
    assert article["slug"] == "how-to-train-your-dragon"
    assert article["title"] == payload["title"]
    assert article["description"] == payload["description"]
    assert article["body"] == payload["body"]
    assert article["tagList"] == []
    assert article["favorited"] is False
    assert article["favoritesCount"] == 0
    assert type(article["favoritesCount"]) is int
    assert article["author"] == {"username": "alice", "bio": None, "image": None, "following": False}
    assert ISO_TIMESTAMP.match(article["createdAt"])
    assert ISO_TIMESTAMP.match(article["updatedAt"])


async def test_create_accepts_bearer_scheme(client: AsyncClient) -> None:
    alice = await register(client)
    response = await client.post(
        "/articles", json={"article": article_payload()}, headers=auth(alice["token"], "Bearer")
    )
    assert response.status_code == 201


async def test_create_tag_list_is_trimmed_deduplicated_and_sorted(client: AsyncClient) -> None:
    alice = await register(client)
    tags = [" dragons ", "training", "", "   ", "dragons", "angular", "training "]
    article = await create_article(client, alice["token"], tagList=tags)
    assert article["tagList"] == ["angular", "dragons", "training"]
    fetched = (await client.get(f"/articles/{article['slug']}")).json()["article"]
    assert fetched["tagList"] == ["angular", "dragons", "training"]


async def test_create_tag_order_is_the_same_in_every_response(client: AsyncClient) -> None:
    alice = await register(client)
    article = await create_article(client, alice["token"], tagList=["b", "B", "a", "A", "_x", "1"])
    assert article["tagList"] == sorted(["b", "B", "a", "A", "_x", "1"])
    fetched = (await client.get(f"/articles/{article['slug']}")).json()["article"]
    listed = (await client.get("/articles")).json()["articles"][0]
    assert fetched["tagList"] == listed["tagList"] == article["tagList"]


@pytest.mark.parametrize("fields", [{}, {"tagList": []}, {"tagList": ["", "  "]}])
async def test_create_without_tags_has_empty_tag_list(client: AsyncClient, fields: dict[str, Any]) -> None:
    alice = await register(client)
    response = await client.post("/articles", json={"article": article_payload(**fields)}, headers=auth(alice["token"]))
    assert response.status_code == 201
    assert response.json()["article"]["tagList"] == []


async def test_create_tag_list_null_is_invalid_as_on_update(client: AsyncClient) -> None:
    alice = await register(client)
    payload = article_payload(tagList=None)
    response = await client.post("/articles", json={"article": payload}, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == TAGS_INVALID
    assert (await client.get("/articles", params={"author": alice["username"]})).json()["articlesCount"] == 0


async def test_create_duplicate_titles_get_distinct_slugs(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    first = await create_article(client, alice["token"], title="Same title")
    second = await create_article(client, alice["token"], title="Same title")
    third = await create_article(client, bob["token"], title="Same title")
    slugs = {first["slug"], second["slug"], third["slug"]}
    assert len(slugs) == 3
    assert first["slug"] == "same-title"
    for slug in slugs:
        assert slug.startswith("same-title")
        fetched = await client.get(f"/articles/{slug}")
        assert fetched.status_code == 200
        assert fetched.json()["article"]["title"] == "Same title"


@pytest.mark.parametrize("field", ["title", "description", "body"])
@pytest.mark.parametrize("blank", ["missing", None, "", "   "])
async def test_create_blank_field_is_cant_be_blank(client: AsyncClient, field: str, blank: Any) -> None:
    alice = await register(client)
    payload = blank_value(article_payload(), field, blank)
    response = await client.post("/articles", json={"article": payload}, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": {field: ["can't be blank"]}}


async def test_create_reports_every_blank_field(client: AsyncClient) -> None:
    alice = await register(client)
    response = await client.post("/articles", json={"article": {"title": ""}}, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == {
        "errors": {"title": ["can't be blank"], "description": ["can't be blank"], "body": ["can't be blank"]}
    }


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"title": "t" * 256}, "title", "is too long (maximum is 255 characters)"),
        ({"description": "d" * 1001}, "description", "is too long (maximum is 1000 characters)"),
        ({"body": "b" * 100_001}, "body", "is too long (maximum is 100000 characters)"),
        ({"tagList": ["ok", "t" * 65]}, "tagList", "is too long (maximum is 64 characters)"),
        ({"tagList": [f"tag{i}" for i in range(21)]}, "tagList", "is too long (maximum is 20 tags)"),
        ({"tagList": ["ok", 1]}, "tagList", "is invalid"),
        ({"tagList": [None]}, "tagList", "is invalid"),
        ({"tagList": [["nested"]]}, "tagList", "is invalid"),
        ({"tagList": "dragons"}, "tagList", "is invalid"),
        ({"tagList": {"dragons": True}}, "tagList", "is invalid"),
        ({"title": 123}, "title", "is invalid"),
        ({"body": ["text"]}, "body", "is invalid"),
    ],
)
async def test_create_invalid_field(client: AsyncClient, fields: dict[str, Any], field: str, message: str) -> None:
    alice = await register(client)
    response = await client.post("/articles", json={"article": article_payload(**fields)}, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": {field: [message]}}


async def test_create_accepts_values_at_the_limits(client: AsyncClient) -> None:
    alice = await register(client)
    tags = [f"{i:02d}" + "t" * 62 for i in range(20)]
    fields = {"title": "t" * 255, "description": "d" * 1000, "body": "b" * 100_000}
    article = await create_article(client, alice["token"], tagList=[*tags, tags[0]], **fields)
    assert article["tagList"] == tags
    assert (article["title"], article["description"], article["body"]) == (
        fields["title"],
        fields["description"],
        fields["body"],
    )


async def test_create_duplicate_tags_count_once_towards_the_limit(client: AsyncClient) -> None:
    alice = await register(client)
    tags = [f"tag{i:02d}" for i in range(20)]
    article = await create_article(client, alice["token"], tagList=tags + [f" {t} " for t in tags])
    assert article["tagList"] == tags


@pytest.mark.parametrize("body", [b"{}", b'{"articles": {}}', b"{not json", b""])
async def test_create_missing_envelope_is_article_cant_be_blank(client: AsyncClient, body: bytes) -> None:
    alice = await register(client)
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.post("/articles", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json() == ARTICLE_BLANK


@pytest.mark.parametrize("body", [b"[]", b'{"article": "x"}', b'{"article": null}', b'{"article": []}'])
async def test_create_malformed_envelope_names_the_key(client: AsyncClient, body: bytes) -> None:
    alice = await register(client)
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.post("/articles", content=body, headers=headers)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == ["article"]
    assert errors["article"][0] in ("can't be blank", "is invalid")


@pytest.mark.parametrize("body", [b'{"article": {"title": "t", "description": "d", "body": "b"}}', b"{}", b"{not json"])
async def test_create_without_token_is_401_first(client: AsyncClient, body: bytes) -> None:
    response = await client.post("/articles", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("header", [BAD_TOKEN, "Token", "Basic abc", "Bearer "])
async def test_create_with_bad_token_is_401(client: AsyncClient, header: str) -> None:
    response = await client.post("/articles", json={"article": article_payload()}, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID


async def test_create_ignores_fields_the_client_may_not_set(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    await register(client, "mallory")
    extra = {
        "slug": "my-own-slug",
        "author": {"username": "mallory"},
        "favoritesCount": 99,
        "favorited": True,
        "createdAt": "2000-01-01T00:00:00.000Z",
    }
    article = await create_article(client, alice["token"], title="Honest title", **extra)
    assert article["slug"] == "honest-title"
    assert article["author"]["username"] == "alice"
    assert article["favoritesCount"] == 0
    assert article["favorited"] is False
    assert not article["createdAt"].startswith("2000")
    assert (await client.get("/articles/my-own-slug")).status_code == 404


# ---------------------------------------------------------------------------------------------------------------
# Get


async def test_get_returns_the_created_article(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], tagList=["dragons"])
    anonymous = await client.get(f"/articles/{created['slug']}")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"article": created}
    as_author = await client.get(f"/articles/{created['slug']}", headers=auth(alice["token"]))
    assert as_author.status_code == 200
    assert as_author.json() == {"article": created}


async def test_get_unknown_slug_is_404(client: AsyncClient) -> None:
    alice = await register(client)
    assert (await client.get("/articles/no-such-article")).json() == NOT_FOUND
    response = await client.get("/articles/no-such-article", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_get_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slug = (await create_article(client, alice["token"]))["slug"]
    await follow(client, bob["token"], "alice")
    await favorite(client, bob["token"], slug)

    as_bob = (await client.get(f"/articles/{slug}", headers=auth(bob["token"]))).json()["article"]
    assert (as_bob["favorited"], as_bob["favoritesCount"], as_bob["author"]["following"]) == (True, 1, True)
    as_carol = (await client.get(f"/articles/{slug}", headers=auth(carol["token"]))).json()["article"]
    assert (as_carol["favorited"], as_carol["favoritesCount"], as_carol["author"]["following"]) == (False, 1, False)
    anonymous = (await client.get(f"/articles/{slug}")).json()["article"]
    assert (anonymous["favorited"], anonymous["favoritesCount"], anonymous["author"]["following"]) == (False, 1, False)


async def test_get_with_invalid_token_is_401_not_anonymous(client: AsyncClient) -> None:
    alice = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.get(f"/articles/{slug}", headers={"Authorization": BAD_TOKEN})
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID


# ---------------------------------------------------------------------------------------------------------------
# Update


async def update(client: AsyncClient, token: str, slug: str, article: Any) -> Any:
    return await client.put(f"/articles/{slug}", json={"article": article}, headers=auth(token))


@pytest.mark.parametrize(
    "changes",
    [
        {"body": "A new body"},
        {"description": "A new description"},
        {"body": "New body", "description": "New description"},
        {"tagList": ["zebra", "apple"]},
    ],
)
async def test_update_subset_keeps_the_rest_and_the_slug(client: AsyncClient, changes: dict[str, Any]) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], title="Stable title", tagList=["dragons"])
    response = await update(client, alice["token"], created["slug"], changes)
    assert response.status_code == 200
    updated = response.json()["article"]
    assert set(updated) == SINGLE_ARTICLE_KEYS
    expected = {**created, **changes}
    if "tagList" in changes:
        expected["tagList"] = sorted(changes["tagList"])
    assert {k: v for k, v in updated.items() if k != "updatedAt"} == {
        k: v for k, v in expected.items() if k != "updatedAt"
    }
    assert updated["slug"] == "stable-title"
    fetched = (await client.get("/articles/stable-title")).json()["article"]
    assert fetched == updated


async def test_update_tag_list_empty_clears_tags(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], tagList=["dragons", "training"])
    response = await update(client, alice["token"], created["slug"], {"tagList": []})
    assert response.status_code == 200
    assert response.json()["article"]["tagList"] == []
    assert (await client.get(f"/articles/{created['slug']}")).json()["article"]["tagList"] == []


async def test_update_tag_list_is_cleaned_like_on_create(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], tagList=["old"])
    response = await update(client, alice["token"], created["slug"], {"tagList": [" b ", "a", "", "b", "old"]})
    assert response.status_code == 200
    assert response.json()["article"]["tagList"] == ["a", "b", "old"]


async def test_update_tag_list_null_is_invalid(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], tagList=["dragons"])
    response = await update(client, alice["token"], created["slug"], {"tagList": None})
    assert response.status_code == 422
    assert response.json() == TAGS_INVALID
    assert (await client.get(f"/articles/{created['slug']}")).json()["article"]["tagList"] == ["dragons"]


@pytest.mark.parametrize("article", [{}, {"slug": "x"}, {"author": "bob", "favoritesCount": 3}])
async def test_update_without_any_field_is_article_cant_be_blank(client: AsyncClient, article: Any) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    response = await update(client, alice["token"], created["slug"], article)
    assert response.status_code == 422
    assert response.json() == ARTICLE_BLANK


@pytest.mark.parametrize("body", [b"{}", b"{not json"])
async def test_update_missing_envelope_is_article_cant_be_blank(client: AsyncClient, body: bytes) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.put(f"/articles/{created['slug']}", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json() == ARTICLE_BLANK


@pytest.mark.parametrize("field", ["title", "description", "body"])
@pytest.mark.parametrize("blank", [None, "", "   "])
async def test_update_blank_field_is_cant_be_blank(client: AsyncClient, field: str, blank: Any) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    response = await update(client, alice["token"], created["slug"], {field: blank})
    assert response.status_code == 422
    assert response.json() == {"errors": {field: ["can't be blank"]}}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"title": "t" * 256}, "title", "is too long (maximum is 255 characters)"),
        ({"description": "d" * 1001}, "description", "is too long (maximum is 1000 characters)"),
        ({"body": "b" * 100_001}, "body", "is too long (maximum is 100000 characters)"),
        ({"tagList": ["t" * 65]}, "tagList", "is too long (maximum is 64 characters)"),
        ({"tagList": [f"tag{i}" for i in range(21)]}, "tagList", "is too long (maximum is 20 tags)"),
        ({"tagList": "dragons"}, "tagList", "is invalid"),
        ({"tagList": [1]}, "tagList", "is invalid"),
        ({"title": False}, "title", "is invalid"),
    ],
)
async def test_update_invalid_field(client: AsyncClient, changes: dict[str, Any], field: str, message: str) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    response = await update(client, alice["token"], created["slug"], changes)
    assert response.status_code == 422
    assert response.json() == {"errors": {field: [message]}}


async def test_update_failed_validation_changes_nothing(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], tagList=["dragons"])
    response = await update(
        client, alice["token"], created["slug"], {"title": "New title", "body": "New body", "description": ""}
    )
    assert response.status_code == 422
    assert response.json() == {"errors": {"description": ["can't be blank"]}}
    assert (await client.get(f"/articles/{created['slug']}")).json() == {"article": created}
    assert (await client.get("/articles/new-title")).status_code == 404


async def test_update_title_regenerates_the_slug(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], title="Old title", tagList=["dragons"])
    response = await update(client, alice["token"], created["slug"], {"title": "Brand new title"})
    assert response.status_code == 200
    updated = response.json()["article"]
    assert updated["slug"] == "brand-new-title"
    assert updated["title"] == "Brand new title"
    assert (updated["body"], updated["description"], updated["tagList"]) == (
        created["body"],
        created["description"],
        ["dragons"],
    )
    old = await client.get("/articles/old-title")
    assert old.status_code == 404
    assert old.json() == NOT_FOUND
    assert (await client.get("/articles/brand-new-title")).json() == {"article": updated}


async def test_update_title_to_a_taken_slug_gets_a_distinct_one(client: AsyncClient) -> None:
    alice = await register(client)
    taken = await create_article(client, alice["token"], title="Popular title")
    created = await create_article(client, alice["token"], title="Other title")
    response = await update(client, alice["token"], created["slug"], {"title": "Popular title"})
    assert response.status_code == 200
    slug = response.json()["article"]["slug"]
    assert slug != taken["slug"]
    assert slug.startswith("popular-title-")
    assert (await client.get(f"/articles/{taken['slug']}")).json()["article"]["description"] == taken["description"]
    assert (await client.get(f"/articles/{slug}")).json()["article"]["description"] == created["description"]


async def test_update_title_with_the_same_slug_keeps_it(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"], title="Hello world")
    response = await update(client, alice["token"], created["slug"], {"title": "Hello, World!"})
    assert response.status_code == 200
    assert response.json()["article"]["slug"] == "hello-world"
    assert response.json()["article"]["title"] == "Hello, World!"


async def test_update_keeps_created_at_and_moves_updated_at(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    first = (await update(client, alice["token"], created["slug"], {"body": "one"})).json()["article"]
    second = (await update(client, alice["token"], created["slug"], {"body": "two"})).json()["article"]
    assert first["createdAt"] == second["createdAt"] == created["createdAt"]
    assert created["updatedAt"] < first["updatedAt"] < second["updatedAt"]
    fetched = (await client.get(f"/articles/{created['slug']}")).json()["article"]
    assert (fetched["createdAt"], fetched["updatedAt"]) == (created["createdAt"], second["updatedAt"])


async def test_update_response_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await create_article(client, alice["token"])
    await favorite(client, alice["token"], created["slug"])
    await favorite(client, bob["token"], created["slug"])
    updated = (await update(client, alice["token"], created["slug"], {"body": "new"})).json()["article"]
    assert (updated["favorited"], updated["favoritesCount"], updated["author"]["following"]) == (True, 2, False)


async def test_update_by_non_author_is_403_and_changes_nothing(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await create_article(client, alice["token"])
    response = await update(client, bob["token"], created["slug"], {"title": "Hijacked", "body": "pwned"})
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert (await client.get(f"/articles/{created['slug']}")).json() == {"article": created}


async def test_update_unknown_slug_is_404_never_403(client: AsyncClient) -> None:
    alice = await register(client)
    response = await update(client, alice["token"], "no-such-article", {"body": "x"})
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("slug", ["no-such-article", None])
async def test_update_without_token_is_401_first(client: AsyncClient, slug: str | None) -> None:
    if slug is None:
        alice = await register(client)
        slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.put(f"/articles/{slug}", json={"article": {"body": "x"}})
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    for body in (b'{"article": {}}', b"{not json"):
        invalid = await client.put(f"/articles/{slug}", content=body, headers={"Content-Type": "application/json"})
        assert invalid.status_code == 401
        assert invalid.json() == TOKEN_MISSING


# ---------------------------------------------------------------------------------------------------------------
# Delete


async def test_delete_by_author_is_204_then_404(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    response = await client.delete(f"/articles/{created['slug']}", headers=auth(alice["token"]))
    assert response.status_code == 204
    assert response.content == b""
    gone = await client.get(f"/articles/{created['slug']}")
    assert gone.status_code == 404
    assert gone.json() == NOT_FOUND
    again = await client.delete(f"/articles/{created['slug']}", headers=auth(alice["token"]))
    assert again.status_code == 404
    assert again.json() == NOT_FOUND


async def test_delete_article_with_comments_tags_and_favorites(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    keep = await create_article(client, alice["token"], tagList=["shared"])
    created = await create_article(client, alice["token"], tagList=["only-here", "shared"])
    slug = created["slug"]
    await favorite(client, alice["token"], slug)
    await favorite(client, bob["token"], slug)
    for token in (alice["token"], bob["token"]):
        comment = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=auth(token))
        assert comment.status_code == 201

    response = await client.delete(f"/articles/{slug}", headers=auth(alice["token"]))
    assert response.status_code == 204
    assert (await client.get(f"/articles/{slug}")).status_code == 404
    comments = await client.get(f"/articles/{slug}/comments")
    assert comments.status_code == 404
    assert comments.json() == NOT_FOUND
    assert (await client.get("/tags")).json() == {"tags": ["shared"]}
    assert (await client.get("/articles", params={"favorited": bob["username"]})).json() == {
        "articles": [],
        "articlesCount": 0,
    }
    assert (await client.get(f"/articles/{keep['slug']}")).json() == {"article": keep}


async def test_delete_by_non_author_is_403(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await create_article(client, alice["token"])
    response = await client.delete(f"/articles/{created['slug']}", headers=auth(bob["token"]))
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert (await client.get(f"/articles/{created['slug']}")).status_code == 200


async def test_delete_unknown_slug_is_404(client: AsyncClient) -> None:
    alice = await register(client)
    response = await client.delete("/articles/no-such-article", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("slug", ["no-such-article", None])
async def test_delete_without_token_is_401(client: AsyncClient, slug: str | None) -> None:
    if slug is None:
        alice = await register(client)
        slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.delete(f"/articles/{slug}")
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING


# ---------------------------------------------------------------------------------------------------------------
# Favorites


async def test_favorite_returns_full_article_favorited(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await create_article(client, alice["token"], tagList=["dragons"])
    response = await client.post(f"/articles/{created['slug']}/favorite", headers=auth(bob["token"]))
    assert response.status_code == 200
    article = response.json()["article"]
    assert set(article) == SINGLE_ARTICLE_KEYS
    assert article == {**created, "favorited": True, "favoritesCount": 1}


async def test_favorite_twice_counts_once(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    await favorite(client, bob["token"], slug)
    article = await favorite(client, bob["token"], slug)
    assert (article["favorited"], article["favoritesCount"]) == (True, 1)


async def test_unfavorite_returns_article_unfavorited(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    created = await create_article(client, alice["token"])
    await favorite(client, bob["token"], created["slug"])
    response = await client.delete(f"/articles/{created['slug']}/favorite", headers=auth(bob["token"]))
    assert response.status_code == 200
    assert response.json() == {"article": {**created, "favorited": False, "favoritesCount": 0}}
    fetched = (await client.get(f"/articles/{created['slug']}", headers=auth(bob["token"]))).json()["article"]
    assert (fetched["favorited"], fetched["favoritesCount"]) == (False, 0)


async def test_unfavorite_when_not_favorited_changes_nothing(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    carol = await register(client)
    created = await create_article(client, alice["token"])
    await favorite(client, carol["token"], created["slug"])
    response = await client.delete(f"/articles/{created['slug']}/favorite", headers=auth(bob["token"]))
    assert response.status_code == 200
    assert response.json() == {"article": {**created, "favorited": False, "favoritesCount": 1}}


async def test_author_may_favorite_own_article(client: AsyncClient) -> None:
    alice = await register(client)
    created = await create_article(client, alice["token"])
    article = await favorite(client, alice["token"], created["slug"])
    assert (article["favorited"], article["favoritesCount"]) == (True, 1)


async def test_favorites_of_two_users_count_two(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    carol = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    assert (await favorite(client, bob["token"], slug))["favoritesCount"] == 1
    assert (await favorite(client, carol["token"], slug))["favoritesCount"] == 2
    as_alice = (await client.get(f"/articles/{slug}", headers=auth(alice["token"]))).json()["article"]
    assert (as_alice["favorited"], as_alice["favoritesCount"]) == (False, 2)


async def test_favorite_accepts_json_content_type_without_body(client: AsyncClient) -> None:
    alice = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.post(f"/articles/{slug}/favorite", headers=headers)
    assert response.status_code == 200
    response = await client.post(f"/articles/{slug}/favorite", headers=headers, content=b"{}")
    assert response.status_code == 200
    assert response.json()["article"]["favoritesCount"] == 1


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_favorite_unknown_slug_is_404(client: AsyncClient, method: str) -> None:
    alice = await register(client)
    response = await client.request(method, "/articles/no-such-article/favorite", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("slug", ["no-such-article", None])
async def test_favorite_without_token_is_401(client: AsyncClient, method: str, slug: str | None) -> None:
    if slug is None:
        alice = await register(client)
        slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.request(method, f"/articles/{slug}/favorite")
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING


async def test_concurrent_favorites_by_many_users_count_exactly(committing_client: AsyncClient) -> None:
    client = committing_client
    alice = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    fans = [await register(client) for _ in range(20)]
    responses = await asyncio.gather(
        *(client.post(f"/articles/{slug}/favorite", headers=auth(fan["token"])) for fan in fans)
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert all(r.json()["article"]["favorited"] is True for r in responses)
    article = (await client.get(f"/articles/{slug}")).json()["article"]
    assert article["favoritesCount"] == 20


async def test_concurrent_favorites_by_one_user_count_once(committing_client: AsyncClient) -> None:
    client = committing_client
    alice = await register(client)
    bob = await register(client)
    slug = (await create_article(client, alice["token"]))["slug"]
    responses = await asyncio.gather(
        *(client.post(f"/articles/{slug}/favorite", headers=auth(bob["token"])) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.json()["article"]["favoritesCount"] == 1 for r in responses)
    article = (await client.get(f"/articles/{slug}", headers=auth(bob["token"]))).json()["article"]
    assert (article["favorited"], article["favoritesCount"]) == (True, 1)


@pytest.mark.parametrize("role", [Role.MODERATOR, Role.ADMIN])
async def test_staff_may_delete_but_not_edit_anothers_article(
    client: AsyncClient, session: AsyncSession, role: Role
) -> None:
    alice = await register(client, "alice")
    staff = await register(client, "staff")
    await session.execute(sql_update(User).where(User.username == "staff").values(role=role))
    await session.commit()
    slug = (await create_article(client, alice["token"]))["slug"]
    edit = await client.put(f"/articles/{slug}", headers=auth(staff["token"]), json={"article": {"body": "mine"}})
    assert edit.status_code == 403
    assert edit.json() == {"errors": {"article": ["forbidden"]}}
    response = await client.delete(f"/articles/{slug}", headers=auth(staff["token"]))
    assert response.status_code == 204
    assert (await client.get(f"/articles/{slug}")).status_code == 404


async def test_new_article_has_equal_created_and_updated_at(client: AsyncClient) -> None:
    alice = await register(client)
    article = await create_article(client, alice["token"])
    assert article["createdAt"] == article["updatedAt"]
