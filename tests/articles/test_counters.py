"""The maintained counters (``articles/counters.py``) stay exact through every change the API makes.

After each step the stored counters equal a recount (``counters.differences`` is empty) and the totals a client
reads agree with what the test knows it did: ``articlesCount`` unfiltered, per tag, per author, per favoriting user
and of the feed, ``favoritesCount``, and which tags ``GET /tags`` lists in which order. Counters set wrong by hand
are reported exactly and rebuilt. On PostgreSQL, a batch of truly concurrent writes leaves them exact, and the
races between a delete and the other writes to the same article are pinned down one by one.
"""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.articles import counters
from service.articles.counters import Difference
from tests.helpers import article_payload, auth, create_article, favorite, follow, register

NOT_FOUND = {"errors": {"article": ["not found"]}}
T = TypeVar("T")


async def articles_count(client: AsyncClient, token: str | None = None, path: str = "/articles", **params: str) -> int:
    """``articlesCount`` of a listing, checked against the rows it lists (every test listing fits one page)."""
    response = await client.get(path, params={**params, "limit": 100}, headers=auth(token) if token else {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["articlesCount"] == len(body["articles"]), (path, params, body["articlesCount"])
    count: int = body["articlesCount"]
    return count


async def articles_count_stored(client: AsyncClient) -> int:
    """The unfiltered ``articlesCount``, which need not match the rows listed when the counter is wrong."""
    response = await client.get("/articles")
    assert response.status_code == 200, response.text
    count: int = response.json()["articlesCount"]
    return count


async def listed_tags(client: AsyncClient) -> list[str]:
    response = await client.get("/tags")
    assert response.status_code == 200, response.text
    tags: list[str] = response.json()["tags"]
    return tags


async def favorites_count(client: AsyncClient, slug: str) -> int:
    response = await client.get(f"/articles/{slug}")
    assert response.status_code == 200, response.text
    count: int = response.json()["article"]["favoritesCount"]
    return count


def _rename(known: dict[str, T], old: str, new: str) -> None:
    known[new] = known.pop(old)


# ---------------------------------------------------------------------------------------------------------------
# A scenario over HTTP, on both backends, with what the API should show kept alongside


@dataclass
class World:
    """What the test did, so what every count must be."""

    tokens: dict[str, str] = field(default_factory=dict)  # username -> token
    authors: dict[str, str] = field(default_factory=dict)  # slug -> username, for every live article
    tags: dict[str, set[str]] = field(default_factory=dict)  # slug -> its tags
    fans: dict[str, set[str]] = field(default_factory=dict)  # slug -> who favorited it
    follows: dict[str, set[str]] = field(default_factory=dict)  # follower -> followees
    tags_ever: set[str] = field(default_factory=set)  # a tag no article carries any more must count 0

    async def join(self, client: AsyncClient, username: str) -> None:
        self.tokens[username] = (await register(client, username))["token"]

    async def follow(self, client: AsyncClient, follower: str, followee: str) -> None:
        await follow(client, self.tokens[follower], followee)
        self.follows.setdefault(follower, set()).add(followee)

    async def write(self, client: AsyncClient, username: str, tags: list[str]) -> str:
        article = await create_article(client, self.tokens[username], tagList=tags)
        assert sorted(article["tagList"]) == sorted(tags)
        slug: str = article["slug"]
        self.authors[slug], self.tags[slug], self.fans[slug] = username, set(tags), set()
        self.tags_ever.update(tags)
        return slug

    async def favorite(self, client: AsyncClient, username: str, slug: str, *, undo: bool = False) -> None:
        method = "DELETE" if undo else "POST"
        response = await client.request(method, f"/articles/{slug}/favorite", headers=auth(self.tokens[username]))
        assert response.status_code == 200, response.text
        (self.fans[slug].discard if undo else self.fans[slug].add)(username)
        article = response.json()["article"]
        assert (article["favorited"], article["favoritesCount"]) == (not undo, len(self.fans[slug]))

    async def edit(self, client: AsyncClient, slug: str, **changes: Any) -> str:
        """PUT the changes (``tagList`` among them, or not); returns the slug, new if the title changed."""
        response = await client.put(
            f"/articles/{slug}", json={"article": changes}, headers=auth(self.tokens[self.authors[slug]])
        )
        assert response.status_code == 200, response.text
        article = response.json()["article"]
        new_slug: str = article["slug"]
        _rename(self.authors, slug, new_slug)
        _rename(self.tags, slug, new_slug)
        _rename(self.fans, slug, new_slug)
        if "tagList" in changes:
            self.tags[new_slug] = set(changes["tagList"])
            self.tags_ever.update(changes["tagList"])
        assert sorted(article["tagList"]) == sorted(self.tags[new_slug])
        assert article["favoritesCount"] == len(self.fans[new_slug])
        return new_slug

    async def delete(self, client: AsyncClient, slug: str) -> None:
        response = await client.delete(f"/articles/{slug}", headers=auth(self.tokens[self.authors[slug]]))
        assert response.status_code == 204, response.text
        del self.authors[slug], self.tags[slug], self.fans[slug]

    def tag_counts(self) -> dict[str, int]:
        return {tag: sum(tag in tags for tags in self.tags.values()) for tag in sorted(self.tags_ever)}

    async def check(self, client: AsyncClient, connection: AsyncConnection) -> None:
        """Every counter equals a recount, and every total a client reads is what the test did."""
        assert await counters.differences(connection) == []
        assert await articles_count(client) == len(self.authors)
        counts = self.tag_counts()
        for tag, expected in counts.items():
            assert await articles_count(client, tag=tag) == expected, tag
        for username in self.tokens:
            written = sum(author == username for author in self.authors.values())
            assert await articles_count(client, author=username) == written, username
            favorited = sum(username in fans for fans in self.fans.values())
            assert await articles_count(client, favorited=username) == favorited, username
        for follower, followed in self.follows.items():
            in_feed = sum(author in followed for author in self.authors.values())
            assert await articles_count(client, self.tokens[follower], path="/articles/feed") == in_feed, follower
        for slug, fans in self.fans.items():
            assert await favorites_count(client, slug) == len(fans), slug
        in_use = sorted((tag for tag, n in counts.items() if n), key=lambda tag: (-counts[tag], tag))
        assert await listed_tags(client) == in_use


async def test_counters_stay_exact_through_every_change(client: AsyncClient, connection: AsyncConnection) -> None:
    world = World()
    for name in ("alice", "bob", "carol", "dave"):
        await world.join(client, name)
    await world.follow(client, "dave", "alice")
    await world.follow(client, "dave", "bob")
    await world.check(client, connection)
    assert await listed_tags(client) == []

    # articles with overlapping tags, and one with none
    a1 = await world.write(client, "alice", ["python", "web"])
    a2 = await world.write(client, "alice", ["python"])
    b1 = await world.write(client, "bob", ["web", "rust"])
    c1 = await world.write(client, "carol", [])
    await world.check(client, connection)
    assert await listed_tags(client) == ["python", "web", "rust"]  # 2, 2 (by name), 1
    assert await articles_count(client, tag="python") == 2
    assert await articles_count(client, author="alice") == 2
    assert await articles_count(client, world.tokens["dave"], path="/articles/feed") == 3

    # favorites
    for fan in ("bob", "carol", "dave"):
        await world.favorite(client, fan, a1)
    await world.favorite(client, "dave", b1)
    await world.check(client, connection)
    assert await favorites_count(client, a1) == 3
    assert await articles_count(client, favorited="dave") == 2

    # a repeated favorite counts nothing more; unfavoriting what was never favorited counts nothing less
    await world.favorite(client, "bob", a1)
    await world.favorite(client, "carol", b1, undo=True)
    await world.favorite(client, "alice", c1, undo=True)
    await world.check(client, connection)
    assert await favorites_count(client, a1) == 3
    assert await favorites_count(client, b1) == 1
    assert await articles_count(client, favorited="bob") == 1
    assert await articles_count(client, favorited="carol") == 1

    # a real unfavorite counts once, its repetition not at all
    await world.favorite(client, "carol", a1, undo=True)
    await world.favorite(client, "carol", a1, undo=True)
    await world.check(client, connection)
    assert await favorites_count(client, a1) == 2
    assert await articles_count(client, favorited="carol") == 0

    # tag edits: added (one of them new), removed, unchanged; edits that leave the tags alone
    a2 = await world.edit(client, a2, title="Renamed and retagged", tagList=["python", "rust", "go"])
    a1 = await world.edit(client, a1, tagList=["web"])
    a1 = await world.edit(client, a1, body="only the body")
    a2 = await world.edit(client, a2, tagList=["go", "rust", "python"])  # the same set, in another order
    await world.check(client, connection)
    assert await listed_tags(client) == ["rust", "web", "go", "python"]  # 2, 2, 1, 1
    assert await articles_count(client, tag="python") == 1
    assert await articles_count(client, tag="go") == 1

    # all tags removed
    b1 = await world.edit(client, b1, tagList=[])
    await world.check(client, connection)
    assert await listed_tags(client) == ["go", "python", "rust", "web"]  # 1 each
    assert await articles_count(client, tag="rust") == 1

    # deleting a favorited article: each fan has one favorite fewer, each of its tags one article fewer
    await world.delete(client, a1)
    await world.check(client, connection)
    assert await articles_count(client, favorited="bob") == 0
    assert await articles_count(client, favorited="dave") == 1
    assert await articles_count(client, tag="web") == 0
    assert "web" not in await listed_tags(client)
    assert await articles_count(client) == 3

    await world.delete(client, b1)
    await world.delete(client, c1)
    await world.check(client, connection)
    assert await articles_count(client, favorited="dave") == 0
    assert await articles_count(client, world.tokens["dave"], path="/articles/feed") == 1

    await world.delete(client, a2)
    await world.check(client, connection)
    assert await articles_count(client) == 0
    assert await listed_tags(client) == []


async def test_a_favorite_of_a_missing_article_counts_nothing(client: AsyncClient, connection: AsyncConnection) -> None:
    world = World()
    await world.join(client, "alice")
    slug = await world.write(client, "alice", ["solo"])
    await world.delete(client, slug)
    for method in ("POST", "DELETE"):
        response = await client.request(method, f"/articles/{slug}/favorite", headers=auth(world.tokens["alice"]))
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    again = await client.delete(f"/articles/{slug}", headers=auth(world.tokens["alice"]))
    assert again.status_code == 404
    await world.check(client, connection)


# ---------------------------------------------------------------------------------------------------------------
# Corruption, then check and rebuild


async def _scalar(connection: AsyncConnection, sql: str, **params: Any) -> Any:
    return (await connection.execute(text(sql), params)).scalar_one()


async def test_wrong_counters_are_reported_exactly_and_rebuilt(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    world = World()
    for name in ("alice", "bob", "carol"):
        await world.join(client, name)
    a1 = await world.write(client, "alice", ["python", "web"])
    await world.write(client, "alice", ["python"])
    b1 = await world.write(client, "bob", ["web"])
    await world.favorite(client, "bob", a1)
    await world.favorite(client, "carol", a1)
    await world.favorite(client, "carol", b1)
    await world.check(client, connection)

    ids = {
        name: await _scalar(connection, "SELECT id FROM users WHERE username = :name", name=name)
        for name in world.tokens
    }
    python = await _scalar(connection, "SELECT id FROM tags WHERE name = 'python'")
    a1_id = await _scalar(connection, "SELECT id FROM articles WHERE slug = :slug", slug=a1)
    for sql in (
        "UPDATE counters SET value = value + 5 WHERE name = 'articles'",
        "UPDATE tags SET articles_count = 7 WHERE name = 'python'",
        "UPDATE users SET articles_count = 0 WHERE username = 'alice'",
        "UPDATE users SET favorited_count = favorited_count - 1 WHERE username = 'bob'",
        # two wrong counters in one row: two differences, one row to rewrite
        "UPDATE users SET articles_count = 4, favorited_count = 9 WHERE username = 'carol'",
        "UPDATE articles SET favorites_count = 40 WHERE slug = :slug",
    ):
        await connection.execute(text(sql), {"slug": a1})

    wrong = {
        Difference("counters.articles", "articles", 8, 3),
        Difference("tags.articles_count", python, 7, 2),
        Difference("users.articles_count", ids["alice"], 0, 2),
        Difference("users.articles_count", ids["carol"], 4, 0),
        Difference("users.favorited_count", ids["bob"], 0, 1),
        Difference("users.favorited_count", ids["carol"], 9, 2),
        Difference("articles.favorites_count", a1_id, 40, 2),
    }
    found = await counters.differences(connection)
    assert len(found) == len(wrong)
    assert set(found) == wrong
    # the kinds come in a fixed order: the total, then per table and column
    assert [d.counter for d in found] == [
        "counters.articles",
        "tags.articles_count",
        "users.articles_count",
        "users.articles_count",
        "users.favorited_count",
        "users.favorited_count",
        "articles.favorites_count",
    ]
    # what the listings serve are the stored counters: the corruption is visible until the rebuild
    assert await articles_count_stored(client) == 8
    assert await favorites_count(client, a1) == 40

    await counters.lock_for_recount(connection)
    assert await counters.rebuild(connection) == 6  # counters, one tag, alice, bob, carol, one article
    assert await counters.differences(connection) == []
    await world.check(client, connection)
    await counters.lock_for_recount(connection)
    assert await counters.rebuild(connection) == 0  # nothing left to rewrite


async def test_differences_lists_at_most_limit_per_kind(client: AsyncClient, connection: AsyncConnection) -> None:
    world = World()
    await world.join(client, "alice")
    await world.write(client, "alice", ["x", "y", "z"])
    await connection.execute(text("UPDATE tags SET articles_count = 5"))
    await connection.execute(text("UPDATE counters SET value = 0"))

    everything = await counters.differences(connection)
    assert sorted((d.counter, d.stored, d.actual) for d in everything) == [
        ("counters.articles", 0, 1),
        *[("tags.articles_count", 5, 1)] * 3,
    ]
    limited = await counters.differences(connection, limit=2)
    assert limited[0] == Difference("counters.articles", "articles", 0, 1)
    tag_ids = sorted(int(d.key) for d in everything if d.counter == "tags.articles_count")
    assert [d.key for d in limited[1:]] == tag_ids[:2]  # the lowest ids of that kind


async def test_a_missing_total_row_is_reported_and_recreated(client: AsyncClient, connection: AsyncConnection) -> None:
    world = World()
    await world.join(client, "alice")
    await world.write(client, "alice", ["x"])
    await world.write(client, "alice", [])
    await connection.execute(text("DELETE FROM counters"))

    assert await counters.differences(connection) == [Difference("counters.articles", "articles", None, 2)]
    await counters.lock_for_recount(connection)
    assert await counters.rebuild(connection) == 1
    assert await counters.differences(connection) == []
    await world.check(client, connection)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL: concurrent writes


async def _fresh_differences(engine: AsyncEngine) -> list[Difference]:
    async with engine.connect() as conn:
        return await counters.differences(conn)


async def _counts_by_sql(engine: AsyncEngine) -> dict[str, Any]:
    """The totals a client should read, counted with count(*) on committed data."""

    async def pairs(conn: AsyncConnection, sql: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in (await conn.execute(text(sql))).all()}

    async with engine.connect() as conn:
        return {
            "total": int((await conn.execute(text("SELECT count(*) FROM articles"))).scalar_one()),
            "tags": await pairs(
                conn,
                "SELECT t.name, count(at.article_id) FROM tags t "
                "LEFT JOIN article_tags at ON at.tag_id = t.id GROUP BY t.name",
            ),
            "authors": await pairs(
                conn,
                "SELECT u.username, count(a.id) FROM users u LEFT JOIN articles a ON a.author_id = u.id "
                "GROUP BY u.username",
            ),
            "fans": await pairs(
                conn,
                "SELECT u.username, count(f.article_id) FROM users u LEFT JOIN favorites f ON f.user_id = u.id "
                "GROUP BY u.username",
            ),
            "favorites": await pairs(
                conn,
                "SELECT a.slug, count(f.user_id) FROM articles a LEFT JOIN favorites f ON f.article_id = a.id "
                "GROUP BY a.slug",
            ),
        }


async def _assert_http_agrees_with_sql(client: AsyncClient, engine: AsyncEngine) -> None:
    counted = await _counts_by_sql(engine)
    assert await articles_count_stored(client) == counted["total"]
    for tag, n in counted["tags"].items():
        assert (await client.get("/articles", params={"tag": tag, "limit": 1})).json()["articlesCount"] == n, tag
    for username in counted["authors"]:
        by = (await client.get("/articles", params={"author": username, "limit": 1})).json()["articlesCount"]
        assert by == counted["authors"][username], username
        fav = (await client.get("/articles", params={"favorited": username, "limit": 1})).json()["articlesCount"]
        assert fav == counted["fans"][username], username
    for slug, n in counted["favorites"].items():
        assert await favorites_count(client, slug) == n, slug
    in_use = sorted((t for t, n in counted["tags"].items() if n), key=lambda t: (-counted["tags"][t], t))
    assert await listed_tags(client) == in_use


@dataclass(frozen=True)
class Op:
    """One request of a concurrent batch, and the statuses it may end with."""

    name: str
    send: Callable[[], Coroutine[Any, Any, Response]]
    allowed: frozenset[int]


async def _run(ops: list[Op]) -> list[tuple[str, int]]:
    """Send every request at once; any request whose status is not one it may have is a failure (a deadlock
    would surface as a 500, or a 503 if the driver reported it as a lost connection)."""
    results = await asyncio.gather(*(op.send() for op in ops), return_exceptions=True)
    unexpected = [
        (op.name, repr(result) if isinstance(result, BaseException) else (result.status_code, result.text[:200]))
        for op, result in zip(ops, results, strict=True)
        if isinstance(result, BaseException) or result.status_code not in op.allowed
    ]
    assert unexpected == []
    return [
        (op.name, result.status_code) for op, result in zip(ops, results, strict=True) if isinstance(result, Response)
    ]


TAG_POOL = ("alpha", "beta", "gamma", "delta", "epsilon")


async def test_concurrent_writes_keep_every_counter_exact(committing_client: AsyncClient, engine: AsyncEngine) -> None:
    """150 requests at once: favorites, unfavorites, creates and tag edits with overlapping (and new) tags, and
    two deletes each of two articles that the other requests are favoriting, unfavoriting and retagging. A request
    about a deleted article may find it gone (404); nothing else may fail."""
    client = committing_client
    rng = random.Random(20261202)  # noqa: S311 - a reproducible mix of requests, not a secret
    users = [await register(client, f"racer{i}") for i in range(6)]
    articles = [
        await create_article(client, users[i]["token"], tagList=[TAG_POOL[i % 5], TAG_POOL[(i + 1) % 5]])
        for i in range(6)
    ]
    slugs = [a["slug"] for a in articles]
    for user in users:  # some favorites already, so unfavorites and deletes have something to take back
        for slug in rng.sample(slugs, 3):
            await favorite(client, user["token"], slug)
    doomed = slugs[4:]

    def tags() -> list[str]:
        chosen = rng.sample(TAG_POOL, rng.randint(0, 3))
        if rng.random() < 0.3:
            chosen.append(f"fresh{rng.randint(0, 2)}")  # new tags, created by several requests at once
        return chosen

    def op(name: str, method: str, path: str, token: str, allowed: set[int], body: Any = None) -> Op:
        def send() -> Coroutine[Any, Any, Response]:
            return client.request(method, path, headers=auth(token), json=body)

        return Op(name, send, frozenset(allowed))

    ops: list[Op] = []
    for _ in range(50):  # a favorite of a doomed article may find it gone
        slug = rng.choice(slugs)
        allowed = {200, 404} if slug in doomed else {200}
        ops.append(op(f"favorite {slug}", "POST", f"/articles/{slug}/favorite", rng.choice(users)["token"], allowed))
    for _ in range(35):  # so may an unfavorite
        slug = rng.choice(slugs)
        allowed = {200, 404} if slug in doomed else {200}
        token = rng.choice(users)["token"]
        ops.append(op(f"unfavorite {slug}", "DELETE", f"/articles/{slug}/favorite", token, allowed))
    for _ in range(30):
        body = {"article": article_payload(tagList=tags())}
        ops.append(op("create", "POST", "/articles", rng.choice(users)["token"], {201}, body))
    for _ in range(25):  # and a tag edit
        i = rng.randrange(len(slugs))
        allowed = {200, 404} if slugs[i] in doomed else {200}
        body = {"article": {"tagList": tags()}}
        ops.append(op(f"retag {slugs[i]}", "PUT", f"/articles/{slugs[i]}", users[i]["token"], allowed, body))
    for _ in range(6):
        ops.append(op("read", "GET", f"/articles?tag={rng.choice(TAG_POOL)}", users[0]["token"], {200}))
    rng.shuffle(ops)
    for n, slug in enumerate(doomed):  # in the thick of it, twice (a double click), other requests before and after
        author = users[slugs.index(slug)]["token"]
        for at in (len(ops) // 3 * (n + 1), len(ops) // 3 * (n + 1) + 5):
            ops.insert(at, op(f"delete {slug}", "DELETE", f"/articles/{slug}", author, {204, 404}))

    outcomes = await _run(ops)

    assert len(ops) == 150
    assert sum(status == 201 for _, status in outcomes) == 30
    for slug in doomed:  # deleted once: the other delete found it gone
        assert sorted(status for name, status in outcomes if name == f"delete {slug}") == [204, 404]
    assert await _fresh_differences(engine) == []
    await _assert_http_agrees_with_sql(client, engine)
    assert await articles_count_stored(client) == 6 - len(doomed) + 30
    for slug in doomed:
        assert (await client.get(f"/articles/{slug}")).status_code == 404


# The races below are made to happen, not hoped for: an outside transaction holds the ``counters`` row, so a
# delete stops right after locking its article (the first step of its lock order) until it is released, while the
# other request runs into that lock. The barrier waits for the requests to be waiting on locks; it never times
# anything.


@asynccontextmanager
async def _counters_row_held(engine: AsyncEngine) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold the ``counters`` row; yields the function that lets go of it."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT value FROM counters WHERE name = 'articles' FOR UPDATE"))
        yield conn.rollback
        if conn.in_transaction():
            await conn.rollback()


async def _waiting_on_locks(engine: AsyncEngine, n: int) -> None:
    """Return once ``n`` sessions of this database are waiting for a lock (fail after ~20 s: they never got there)."""
    sql = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    async with engine.connect() as conn:
        for _ in range(2000):
            if (await conn.execute(sql)).scalar_one() >= n:
                return
            await conn.rollback()
            await asyncio.sleep(0.01)
    pytest.fail(f"fewer than {n} requests ever waited for a lock")


async def _race_a_delete(
    engine: AsyncEngine, delete: Awaitable[Response], other: Callable[[], Awaitable[Response]]
) -> tuple[Response, Response]:
    """Run ``delete``; once it holds its article and waits, run ``other``; once that waits too, let both go."""
    async with _counters_row_held(engine) as release:
        deleting = asyncio.ensure_future(delete)
        await _waiting_on_locks(engine, 1)
        racing = asyncio.ensure_future(other())
        await _waiting_on_locks(engine, 2)
        await release()
        deleted, raced = await asyncio.gather(deleting, racing, return_exceptions=True)
    assert isinstance(deleted, Response), repr(deleted)
    assert isinstance(raced, Response), repr(raced)
    return deleted, raced


async def test_concurrent_deletes_of_one_article_count_it_once(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    client = committing_client
    alice = await register(client)
    slug = (await create_article(client, alice["token"], tagList=["doomed"]))["slug"]

    def again() -> Awaitable[Response]:
        return client.delete(f"/articles/{slug}", headers=auth(alice["token"]))

    first, second = await _race_a_delete(engine, again(), again)

    assert first.status_code == 204
    assert second.status_code == 404, second.text  # it found the row gone once it had waited for it
    assert second.json() == NOT_FOUND
    assert await _fresh_differences(engine) == []
    assert await articles_count_stored(client) == 0
    assert (await client.get("/articles", params={"author": alice["username"]})).json()["articlesCount"] == 0


async def test_an_unfavorite_racing_a_delete_is_no_deadlock(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    client = committing_client
    alice, bob = await register(client), await register(client)
    slug = (await create_article(client, alice["token"], tagList=["doomed"]))["slug"]
    await favorite(client, bob["token"], slug)

    deleted, unfavorited = await _race_a_delete(
        engine,
        client.delete(f"/articles/{slug}", headers=auth(alice["token"])),
        lambda: client.delete(f"/articles/{slug}/favorite", headers=auth(bob["token"])),
    )

    assert (deleted.status_code, unfavorited.status_code) == (204, 404), unfavorited.text
    assert await _fresh_differences(engine) == []
    assert (await client.get("/articles", params={"favorited": bob["username"]})).json()["articlesCount"] == 0


async def test_a_tag_edit_racing_a_delete_is_a_404(committing_client: AsyncClient, engine: AsyncEngine) -> None:
    client = committing_client
    alice = await register(client)
    slug = (await create_article(client, alice["token"], tagList=["doomed"]))["slug"]

    deleted, edited = await _race_a_delete(
        engine,
        client.delete(f"/articles/{slug}", headers=auth(alice["token"])),
        lambda: client.put(
            f"/articles/{slug}", json={"article": {"tagList": ["doomed", "new"]}}, headers=auth(alice["token"])
        ),
    )

    assert deleted.status_code == 204
    assert edited.status_code == 404, edited.text
    assert edited.json() == NOT_FOUND
    assert await _fresh_differences(engine) == []
    assert await listed_tags(client) == []


async def test_a_favorite_racing_a_delete_is_a_404(committing_client: AsyncClient, engine: AsyncEngine) -> None:
    client = committing_client
    alice, bob, carol = await register(client), await register(client), await register(client)
    slug = (await create_article(client, alice["token"], tagList=["doomed"]))["slug"]
    await favorite(client, carol["token"], slug)

    deleted, favorited = await _race_a_delete(
        engine,
        client.delete(f"/articles/{slug}", headers=auth(alice["token"])),
        lambda: client.post(f"/articles/{slug}/favorite", headers=auth(bob["token"])),
    )

    assert deleted.status_code == 204
    assert favorited.status_code == 404, favorited.text
    assert favorited.json() == NOT_FOUND
    assert await _fresh_differences(engine) == []
    for user in (bob, carol):
        assert (await client.get("/articles", params={"favorited": user["username"]})).json()["articlesCount"] == 0
