"""Contract A2, A4, A8 (comments) and B4 (moderators delete comments) over HTTP."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.articles.models import Article
from service.comments.models import Comment
from service.users.models import Role, User
from tests.helpers import ISO_TIMESTAMP, auth, create_article, register

ARTICLE_NOT_FOUND = {"errors": {"article": ["not found"]}}
COMMENT_NOT_FOUND = {"errors": {"comment": ["not found"]}}
COMMENT_FORBIDDEN = {"errors": {"comment": ["forbidden"]}}
TOKEN_MISSING = {"errors": {"token": ["is missing"]}}
BLANK_BODY = {"errors": {"body": ["can't be blank"]}}


async def comment_on(client: AsyncClient, slug: str, token: str, body: str = "Thank you so much!") -> dict[str, Any]:
    response = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=auth(token))
    assert response.status_code == 201, response.text
    comment: dict[str, Any] = response.json()["comment"]
    return comment


async def listed(client: AsyncClient, slug: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = await client.get(f"/articles/{slug}/comments", headers=headers or {})
    assert response.status_code == 200, response.text
    comments: list[dict[str, Any]] = response.json()["comments"]
    return comments


# ---------------------------------------------------------------------------------------------------------------
# POST /articles/{slug}/comments


async def test_create_comment_is_201_with_the_comment(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "Thank you so much!"}}, headers=auth(alice["token"])
    )
    assert response.status_code == 201
    comment = response.json()["comment"]
    assert set(response.json()) == {"comment"}
    assert set(comment) == {"id", "createdAt", "updatedAt", "body", "author"}
    assert type(comment["id"]) is int
    assert comment["body"] == "Thank you so much!"
    assert comment["author"] == {"username": "alice", "bio": None, "image": None, "following": False}
    assert ISO_TIMESTAMP.match(comment["createdAt"]), comment["createdAt"]
    assert ISO_TIMESTAMP.match(comment["updatedAt"]), comment["updatedAt"]
    assert comment["createdAt"] == comment["updatedAt"]  # never updated


async def test_created_comment_is_listed_identically(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    created = await comment_on(client, slug, alice["token"], "Ünïcødé ✓\nsecond line")
    assert created["body"] == "Ünïcødé ✓\nsecond line"
    assert await listed(client, slug, auth(alice["token"])) == [created]  # timestamps serialised identically


async def test_anyone_may_comment_on_someone_elses_article(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    slug = (await create_article(client, alice["token"]))["slug"]
    comment = await comment_on(client, slug, bob["token"])
    assert comment["author"]["username"] == "bob"


@pytest.mark.parametrize("body", ["missing", None, "", "  ", "\n\t"])
async def test_create_comment_blank_body_is_422(client: AsyncClient, body: Any) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    payload: dict[str, Any] = {} if body == "missing" else {"body": body}
    response = await client.post(f"/articles/{slug}/comments", json={"comment": payload}, headers=auth(alice["token"]))
    assert response.status_code == 422
    assert response.json() == BLANK_BODY
    assert await listed(client, slug) == []


async def test_create_comment_body_length_limit(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    too_long = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "x" * 10_001}}, headers=auth(alice["token"])
    )
    assert too_long.status_code == 422
    assert too_long.json() == {"errors": {"body": ["is too long (maximum is 10000 characters)"]}}
    at_limit = await comment_on(client, slug, alice["token"], "x" * 10_000)
    assert len(at_limit["body"]) == 10_000


@pytest.mark.parametrize("body", [123, True, ["hi"], {"text": "hi"}])
async def test_create_comment_body_of_wrong_type_is_invalid(client: AsyncClient, body: Any) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=auth(alice["token"])
    )
    assert response.status_code == 422
    assert response.json() == {"errors": {"body": ["is invalid"]}}


@pytest.mark.parametrize("body", ["a\u0000b", "\u0000"])
async def test_create_comment_body_with_nul_is_invalid_not_a_server_error(client: AsyncClient, body: str) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=auth(alice["token"])
    )
    assert response.status_code == 422
    assert response.json() == {"errors": {"body": ["is invalid"]}}
    assert await listed(client, slug) == []


@pytest.mark.parametrize("content", [b"{}", b'{"body": "hi"}', b"", b"{not json"])
async def test_create_comment_missing_envelope_is_422(client: AsyncClient, content: bytes) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.post(f"/articles/{slug}/comments", content=content, headers=headers)
    assert response.status_code == 422
    assert response.json() == {"errors": {"comment": ["can't be blank"]}}


@pytest.mark.parametrize("content", [b'{"comment": "hi"}', b'{"comment": null}', b"[]", b'"hi"'])
async def test_create_comment_envelope_not_an_object_names_the_key(client: AsyncClient, content: bytes) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    headers = {**auth(alice["token"]), "Content-Type": "application/json"}
    response = await client.post(f"/articles/{slug}/comments", content=content, headers=headers)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == ["comment"]
    assert errors["comment"][0] in ("can't be blank", "is invalid")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json"])
async def test_create_comment_accepts_json_content_type_variants(client: AsyncClient, content_type: str) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    headers = {**auth(alice["token"]), "Content-Type": content_type}
    response = await client.post(f"/articles/{slug}/comments", content=b'{"comment": {"body": "hi"}}', headers=headers)
    assert response.status_code == 201
    assert response.json()["comment"]["body"] == "hi"


async def test_create_comment_ignores_unknown_fields(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    payload = {"comment": {"body": "hi", "id": 999_999, "author": "mallory", "createdAt": "2000-01-01T00:00:00Z"}}
    response = await client.post(f"/articles/{slug}/comments", json=payload, headers=auth(alice["token"]))
    assert response.status_code == 201
    comment = response.json()["comment"]
    assert comment["id"] != 999_999
    assert comment["author"]["username"] == "alice"
    assert not comment["createdAt"].startswith("2000")


async def test_create_comment_on_unknown_article_is_404(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    response = await client.post(
        "/articles/no-such-article/comments", json={"comment": {"body": "hi"}}, headers=auth(alice["token"])
    )
    assert response.status_code == 404
    assert response.json() == ARTICLE_NOT_FOUND


async def test_create_comment_without_token_is_401(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "hi"}})
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    assert "WWW-Authenticate" in response.headers
    assert await listed(client, slug) == []


# ---------------------------------------------------------------------------------------------------------------
# GET /articles/{slug}/comments


async def test_list_comments_empty_is_empty_array(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.get(f"/articles/{slug}/comments")
    assert response.status_code == 200
    assert response.json() == {"comments": []}


async def test_list_comments_oldest_first(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    slug = (await create_article(client, alice["token"]))["slug"]
    first = await comment_on(client, slug, bob["token"], "first")
    second = await comment_on(client, slug, alice["token"], "second")
    third = await comment_on(client, slug, bob["token"], "third")
    comments = await listed(client, slug)
    assert [c["body"] for c in comments] == ["first", "second", "third"]
    assert [c["id"] for c in comments] == [first["id"], second["id"], third["id"]]
    assert first["id"] < second["id"] < third["id"]
    assert comments == [first, second, third]  # anonymous viewer: every following is false, as when created


async def test_list_comments_only_this_articles(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    one = (await create_article(client, alice["token"], title="One"))["slug"]
    two = (await create_article(client, alice["token"], title="Two"))["slug"]
    await comment_on(client, one, alice["token"], "on one")
    await comment_on(client, two, alice["token"], "on two")
    assert [c["body"] for c in await listed(client, one)] == ["on one"]
    assert [c["body"] for c in await listed(client, two)] == ["on two"]


@pytest.mark.parametrize("token", [None, "valid"])
async def test_list_comments_unknown_article_is_404(client: AsyncClient, token: str | None) -> None:
    headers = auth((await register(client))["token"]) if token else {}
    response = await client.get("/articles/no-such-article/comments", headers=headers)
    assert response.status_code == 404
    assert response.json() == ARTICLE_NOT_FOUND


async def test_list_comments_with_invalid_token_is_401(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.get(f"/articles/{slug}/comments", headers=auth("garbage"))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


async def test_list_comments_following_per_viewer(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slug = (await create_article(client, alice["token"]))["slug"]
    await comment_on(client, slug, alice["token"], "by alice")
    await comment_on(client, slug, bob["token"], "by bob")
    await client.post("/profiles/bob/follow", headers=auth(carol["token"]))
    await client.post("/profiles/alice/follow", headers=auth(bob["token"]))

    def flags(comments: list[dict[str, Any]]) -> list[bool]:
        return [c["author"]["following"] for c in comments]

    assert flags(await listed(client, slug, auth(carol["token"]))) == [False, True]
    assert flags(await listed(client, slug, auth(bob["token"]))) == [True, False]
    assert flags(await listed(client, slug, auth(alice["token"]))) == [False, False]
    assert flags(await listed(client, slug)) == [False, False]


async def _seed_comments(session: AsyncSession, slug: str, authors: int) -> list[str]:
    """``authors`` users, one comment each: bulk setup straight in the database (Argon2 over HTTP is slow)."""
    article_id = (await session.scalars(select(Article.id).where(Article.slug == slug))).one()
    start = datetime.now(UTC) - timedelta(hours=1)
    names = []
    for i in range(authors):
        user = User(username=f"author{i}", email=f"author{i}@example.com", password_hash="!")
        session.add(user)
        await session.flush()
        created = start + timedelta(seconds=i)
        session.add(
            Comment(body=f"c{i}", article_id=article_id, author_id=user.id, created_at=created, updated_at=created)
        )
        names.append(user.username)
    await session.commit()
    return names


async def test_list_comments_order_by_time_then_id(client: AsyncClient, session: AsyncSession) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    article_id = (await session.scalars(select(Article.id).where(Article.slug == slug))).one()
    author_id = (await session.scalars(select(User.id).where(User.username == "alice"))).one()
    now = datetime.now(UTC)
    for body, created in [
        ("latest", now),
        ("tie-a", now - timedelta(minutes=1)),
        ("tie-b", now - timedelta(minutes=1)),
    ]:
        session.add(
            Comment(body=body, article_id=article_id, author_id=author_id, created_at=created, updated_at=created)
        )
        await session.flush()
    await session.commit()
    assert [c["body"] for c in await listed(client, slug)] == ["tie-a", "tie-b", "latest"]


@pytest.mark.parametrize("authors", [1, 50])
async def test_list_comments_statement_budget(
    client: AsyncClient, session: AsyncSession, count_statements: Any, authors: int
) -> None:
    viewer = await register(client, "viewer")
    slug = (await create_article(client, viewer["token"]))["slug"]
    names = await _seed_comments(session, slug, authors)
    followed = names[::3]
    for name in followed:
        assert (await client.post(f"/profiles/{name}/follow", headers=auth(viewer["token"]))).status_code == 200

    with count_statements() as counted:
        comments = await listed(client, slug, auth(viewer["token"]))
    assert [c["author"]["username"] for c in comments] == names
    assert [c["author"]["following"] for c in comments] == [name in followed for name in names]
    # the viewer, the article, the comments with authors and flags: the same three for 1 or 50 comments
    assert counted.selects == 3, counted.statements
    assert counted.total == 3, counted.statements

    with count_statements() as anonymous:
        assert len(await listed(client, slug)) == authors
    assert anonymous.total == 2, anonymous.statements


# ---------------------------------------------------------------------------------------------------------------
# DELETE /articles/{slug}/comments/{id}


async def test_delete_comment_is_204_and_gone(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    slug = (await create_article(client, alice["token"]))["slug"]
    keep = await comment_on(client, slug, alice["token"], "keep")
    gone = await comment_on(client, slug, bob["token"], "gone")
    response = await client.delete(f"/articles/{slug}/comments/{gone['id']}", headers=auth(bob["token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert await listed(client, slug) == [keep]
    again = await client.delete(f"/articles/{slug}/comments/{gone['id']}", headers=auth(bob["token"]))
    assert again.status_code == 404
    assert again.json() == COMMENT_NOT_FOUND


@pytest.mark.parametrize("who", ["stranger", "article_author"])
async def test_delete_someone_elses_comment_is_403(client: AsyncClient, who: str) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    slug = (await create_article(client, alice["token"]))["slug"]
    comment = await comment_on(client, slug, bob["token"])
    caller = carol if who == "stranger" else alice
    response = await client.delete(f"/articles/{slug}/comments/{comment['id']}", headers=auth(caller["token"]))
    assert response.status_code == 403
    assert response.json() == COMMENT_FORBIDDEN
    assert await listed(client, slug) == [comment]


@pytest.mark.parametrize("role", [Role.MODERATOR, Role.ADMIN])
async def test_staff_may_delete_any_comment(client: AsyncClient, session: AsyncSession, role: Role) -> None:
    alice = await register(client, "alice")
    staff = await register(client, "staff")
    await session.execute(update(User).where(User.username == "staff").values(role=role))
    await session.commit()
    slug = (await create_article(client, alice["token"]))["slug"]
    comment = await comment_on(client, slug, alice["token"])
    response = await client.delete(f"/articles/{slug}/comments/{comment['id']}", headers=auth(staff["token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert await listed(client, slug) == []


async def test_delete_unknown_comment_id_is_404_comment(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    response = await client.delete(f"/articles/{slug}/comments/999999", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == COMMENT_NOT_FOUND


async def test_delete_comment_of_another_article_is_404_comment(client: AsyncClient) -> None:
    alice = await register(client, "alice")
    one = (await create_article(client, alice["token"], title="One"))["slug"]
    two = (await create_article(client, alice["token"], title="Two"))["slug"]
    other = await comment_on(client, two, alice["token"])
    response = await client.delete(f"/articles/{one}/comments/{other['id']}", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == COMMENT_NOT_FOUND
    assert await listed(client, two) == [other]


@pytest.mark.parametrize("raw_id", ["abc", "1.5", "-1", "0", "1e3", "%201", "9" * 30, "%EF%BC%91"])
async def test_delete_comment_with_non_integer_id_is_404_comment(client: AsyncClient, raw_id: str) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    await comment_on(client, slug, alice["token"])
    response = await client.delete(f"/articles/{slug}/comments/{raw_id}", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == COMMENT_NOT_FOUND
    assert len(await listed(client, slug)) == 1


@pytest.mark.parametrize("comment_id", ["999999", "abc", "existing"])
async def test_delete_comment_on_unknown_article_is_404_article(client: AsyncClient, comment_id: str) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    existing = await comment_on(client, slug, alice["token"])
    raw = str(existing["id"]) if comment_id == "existing" else comment_id
    response = await client.delete(f"/articles/no-such-article/comments/{raw}", headers=auth(alice["token"]))
    assert response.status_code == 404
    assert response.json() == ARTICLE_NOT_FOUND


@pytest.mark.parametrize(("article", "comment_id"), [("known", "known"), ("known", "999999"), ("unknown", "abc")])
async def test_delete_comment_without_token_is_401_first(client: AsyncClient, article: str, comment_id: str) -> None:
    alice = await register(client, "alice")
    slug = (await create_article(client, alice["token"]))["slug"]
    comment = await comment_on(client, slug, alice["token"])
    path_slug = slug if article == "known" else "no-such-article"
    path_id = str(comment["id"]) if comment_id == "known" else comment_id
    response = await client.delete(f"/articles/{path_slug}/comments/{path_id}")
    assert response.status_code == 401
    assert response.json() == TOKEN_MISSING
    assert "WWW-Authenticate" in response.headers
    assert await listed(client, slug) == [comment]
