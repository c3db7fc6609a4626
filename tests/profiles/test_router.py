"""Contract A6 (profiles and follows), A2 (exact errors), B1 (invalid tokens) over HTTP."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient

from tests.helpers import auth, create_article, register

PROFILE_NOT_FOUND = {"errors": {"profile": ["not found"]}}
TOKEN_MISSING = {"errors": {"token": ["is missing"]}}
TOKEN_INVALID = {"errors": {"token": ["is invalid"]}}


def profile(username: str, *, following: bool, bio: str | None = None, image: str | None = None) -> dict[str, Any]:
    return {"profile": {"username": username, "bio": bio, "image": image, "following": following}}


# ---------------------------------------------------------------------------------------------------------------
# GET /profiles/{username}


async def test_get_profile_anonymous_has_null_keys_and_not_following(client: AsyncClient) -> None:
    await register(client, "alice")
    response = await client.get("/profiles/alice")
    assert response.status_code == 200
    assert response.json() == profile("alice", following=False)
    assert set(response.json()["profile"]) == {"username", "bio", "image", "following"}


async def test_get_profile_with_auth_not_following(client: AsyncClient) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    response = await client.get("/profiles/alice", headers=auth(bob["token"]))
    assert response.status_code == 200
    assert response.json() == profile("alice", following=False)


async def test_get_own_profile_is_not_following(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    response = await client.get("/profiles/alice", headers=auth(alice["token"]))
    assert response.status_code == 200
    assert response.json() == profile("alice", following=False)


async def test_get_profile_shows_bio_and_image(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    update = {"bio": "I like dragons", "image": "https://example.com/alice.png"}
    assert (await client.put("/user", json={"user": update}, headers=auth(alice["token"]))).status_code == 200
    response = await client.get("/profiles/alice")
    assert response.status_code == 200
    assert response.json() == profile("alice", following=False, **update)


@pytest.mark.parametrize("asked", ["ALICE", "Alice", "aLiCe"])
async def test_get_profile_username_is_case_insensitive(client: AsyncClient, asked: str) -> None:
    await register(client, "Alice")
    response = await client.get(f"/profiles/{asked}")
    assert response.status_code == 200
    assert response.json() == profile("Alice", following=False)  # the stored spelling comes back


@pytest.mark.parametrize("token", [None, "valid"])
async def test_get_unknown_profile_is_404(client: AsyncClient, token: str | None) -> None:
    headers = auth((await register(client))["token"]) if token else {}
    response = await client.get("/profiles/nobody", headers=headers)
    assert response.status_code == 404
    assert response.json() == PROFILE_NOT_FOUND


@pytest.mark.parametrize(("method", "path"), [("GET", ""), ("POST", "/follow"), ("DELETE", "/follow")])
async def test_username_with_nul_is_404_not_a_server_error(client: AsyncClient, method: str, path: str) -> None:
    bob = await register(client, "bob")
    response = await client.request(method, f"/profiles/bo%00b{path}", headers=auth(bob["token"]))
    assert response.status_code == 404
    assert response.json() == PROFILE_NOT_FOUND


@pytest.mark.parametrize("header", ["Token garbage", "Bearer a.b.c", "Token", "Basic dXNlcjpwYXNz"])
async def test_get_profile_with_invalid_token_is_401_not_anonymous(client: AsyncClient, header: str) -> None:
    await register(client, "alice")
    response = await client.get("/profiles/alice", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID
    assert "WWW-Authenticate" in response.headers


# ---------------------------------------------------------------------------------------------------------------
# POST / DELETE /profiles/{username}/follow


async def test_follow_returns_profile_following(client: AsyncClient) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    response = await client.post("/profiles/alice/follow", headers=auth(bob["token"]))
    assert response.status_code == 200
    assert response.json() == profile("alice", following=True)


async def test_follow_is_case_insensitive_and_returns_stored_name(client: AsyncClient) -> None:
    await register(client, "Alice")
    bob = await register(client, "bob")
    response = await client.post("/profiles/aLICE/follow", headers=auth(bob["token"], "Bearer"))
    assert response.status_code == 200
    assert response.json() == profile("Alice", following=True)


async def test_following_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    assert (await client.post("/profiles/alice/follow", headers=auth(bob["token"]))).status_code == 200

    as_bob = await client.get("/profiles/alice", headers=auth(bob["token"]))
    as_carol = await client.get("/profiles/alice", headers=auth(carol["token"]))
    anonymous = await client.get("/profiles/alice")
    assert as_bob.json() == profile("alice", following=True)
    assert as_carol.json() == profile("alice", following=False)
    assert anonymous.json() == profile("alice", following=False)
    # Following is one-way: alice does not follow bob.
    alice_view_of_bob = await client.get("/profiles/bob", headers=auth(alice["token"]))
    assert alice_view_of_bob.json() == profile("bob", following=False)


async def test_follow_twice_is_idempotent_and_stores_one_row(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    slug = (await create_article(client, alice["token"]))["slug"]
    for _ in range(2):
        response = await client.post("/profiles/alice/follow", headers=auth(bob["token"]))
        assert response.status_code == 200
        assert response.json() == profile("alice", following=True)
    feed = await client.get("/articles/feed", headers=auth(bob["token"]))
    assert feed.status_code == 200
    assert [a["slug"] for a in feed.json()["articles"]] == [slug]
    assert feed.json()["articlesCount"] == 1
    # one unfollow undoes it entirely: there was only ever one row
    await client.delete("/profiles/alice/follow", headers=auth(bob["token"]))
    after = await client.get("/profiles/alice", headers=auth(bob["token"]))
    assert after.json() == profile("alice", following=False)
    assert (await client.get("/articles/feed", headers=auth(bob["token"]))).json() == {
        "articles": [],
        "articlesCount": 0,
    }


async def test_concurrent_follows_make_one_row(committing_client: AsyncClient) -> None:
    client = committing_client
    await register(client, "alice")
    bob = await register(client, "bob")
    responses = await asyncio.gather(
        *(client.post("/profiles/alice/follow", headers=auth(bob["token"])) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert all(r.json() == profile("alice", following=True) for r in responses)
    unfollow = await client.delete("/profiles/alice/follow", headers=auth(bob["token"]))
    assert unfollow.json() == profile("alice", following=False)
    assert (await client.get("/profiles/alice", headers=auth(bob["token"]))).json() == profile("alice", following=False)


async def test_unfollow_returns_profile_not_following(client: AsyncClient) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    await client.post("/profiles/alice/follow", headers=auth(bob["token"]))
    response = await client.delete("/profiles/alice/follow", headers=auth(bob["token"]))
    assert response.status_code == 200
    assert response.json() == profile("alice", following=False)
    assert (await client.get("/profiles/alice", headers=auth(bob["token"]))).json() == profile("alice", following=False)


async def test_unfollow_not_followed_is_200_false(client: AsyncClient) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    for _ in range(2):
        response = await client.delete("/profiles/alice/follow", headers=auth(bob["token"]))
        assert response.status_code == 200
        assert response.json() == profile("alice", following=False)


async def test_unfollow_only_removes_the_callers_follow(client: AsyncClient) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    await client.post("/profiles/alice/follow", headers=auth(bob["token"]))
    await client.post("/profiles/alice/follow", headers=auth(carol["token"]))
    await client.delete("/profiles/alice/follow", headers=auth(carol["token"]))
    assert (await client.get("/profiles/alice", headers=auth(bob["token"]))).json()["profile"]["following"] is True
    assert (await client.get("/profiles/alice", headers=auth(carol["token"]))).json()["profile"]["following"] is False


@pytest.mark.parametrize("asked", ["alice", "ALICE"])
async def test_follow_yourself_is_422(client: AsyncClient, asked: str) -> None:
    alice = await register(client, "alice")
    response = await client.post(f"/profiles/{asked}/follow", headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": {"profile": ["cannot follow yourself"]}}
    assert (await client.get("/profiles/alice", headers=auth(alice["token"]))).json() == profile(
        "alice", following=False
    )


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_follow_unknown_username_is_404(client: AsyncClient, method: str) -> None:
    bob = await register(client, "bob")
    response = await client.request(method, "/profiles/nobody/follow", headers=auth(bob["token"]))
    assert response.status_code == 404
    assert response.json() == PROFILE_NOT_FOUND


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_follow_without_token_is_401(client: AsyncClient, method: str) -> None:
    await register(client, "alice")
    response = await client.request(method, "/profiles/alice/follow")
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_follow_with_invalid_token_is_401(client: AsyncClient, method: str) -> None:
    await register(client, "alice")
    response = await client.request(method, "/profiles/alice/follow", headers=auth("not-a-jwt"))
    assert response.status_code == 401
    assert response.json() == TOKEN_INVALID


@pytest.mark.parametrize(("method", "following"), [("POST", True), ("DELETE", False)])
@pytest.mark.parametrize("body", [b"", b"{}", b'{"profile": {"username": "someone"}}', b"null", b"{not json"])
async def test_follow_ignores_json_body_and_content_type(
    client: AsyncClient, method: str, following: bool, body: bytes
) -> None:
    await register(client, "alice")
    bob = await register(client, "bob")
    headers = {**auth(bob["token"]), "Content-Type": "application/json"}
    response = await client.request(method, "/profiles/alice/follow", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == profile("alice", following=following)


# ---------------------------------------------------------------------------------------------------------------
# author.following inside articles and comments


async def test_article_author_following_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slug = (await create_article(client, alice["token"]))["slug"]
    await client.post("/profiles/alice/follow", headers=auth(bob["token"]))

    async def author_following(headers: dict[str, str]) -> Any:
        response = await client.get(f"/articles/{slug}", headers=headers)
        assert response.status_code == 200
        author = response.json()["article"]["author"]
        assert author["username"] == "alice"
        return author["following"]

    assert await author_following(auth(bob["token"])) is True
    assert await author_following(auth(carol["token"])) is False
    assert await author_following(auth(alice["token"])) is False
    assert await author_following({}) is False

    listed = await client.get("/articles", params={"author": "alice"}, headers=auth(bob["token"]))
    assert [a["author"]["following"] for a in listed.json()["articles"]] == [True]

    await client.delete("/profiles/alice/follow", headers=auth(bob["token"]))
    assert await author_following(auth(bob["token"])) is False


async def test_comment_author_following_reflects_the_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slug = (await create_article(client, alice["token"]))["slug"]
    for user in (alice, carol):
        created = await client.post(
            f"/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=auth(user["token"])
        )
        assert created.status_code == 201
    await client.post("/profiles/alice/follow", headers=auth(bob["token"]))

    async def flags(headers: dict[str, str]) -> list[tuple[str, bool]]:
        response = await client.get(f"/articles/{slug}/comments", headers=headers)
        assert response.status_code == 200
        return [(c["author"]["username"], c["author"]["following"]) for c in response.json()["comments"]]

    assert await flags(auth(bob["token"])) == [("alice", True), ("carol", False)]
    assert await flags(auth(carol["token"])) == [("alice", False), ("carol", False)]
    assert await flags({}) == [("alice", False), ("carol", False)]
