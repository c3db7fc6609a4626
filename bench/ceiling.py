"""The ceiling: the service's benchmarked endpoints with no framework at all, to measure the service against.

A deliberately minimal ASGI app: one asyncpg pool, one hand-written SQL statement per part of a request (the
token's user, a total, a page), JSON by orjson. It answers byte for byte what the service answers
(``tests/test_ceiling.py`` proves it for the same requests) and does the same work the service does: the same
token checks (python-jose, the user read on every request, suspended users refused), the same exact totals
read from the same maintained counters, the same flags per viewer, reads in autocommit, writes in one
transaction that keeps the same counters. It caches nothing the service does not cache. What it leaves out is
everything a framework brings: routing tables, dependency injection, validation models, middleware.

Run it as the benchmark does (``python -m bench`` starts it with the service, side by side):

    CEILING_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/conduit CEILING_SECRET_KEY=... \\
        uvicorn --factory bench.ceiling:create_app --workers 2 --no-access-log

Read endpoints: ``GET /api/articles`` (``tag``, ``author``, ``favorited``, ``limit``, ``offset``),
``/api/articles/feed``, ``/api/articles/{slug}``, ``/api/articles/{slug}/comments``,
``/api/profiles/{username}``, ``/api/tags``. Writes, for the write mix: ``POST /api/users``,
``/api/users/login``, ``/api/articles``, ``/api/articles/{slug}/comments``, ``/api/articles/{slug}/favorite``.
"""

import asyncio
import hashlib
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
from jose import ExpiredSignatureError, JWTError, jwt
from pwdlib import PasswordHash

from service.articles.slugs import slugify, with_suffix

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Handler = Callable[["Request"], Awaitable[tuple[int, bytes]]]

ALGORITHM = "HS256"
TOKEN_TTL = timedelta(hours=24)
_hasher = PasswordHash.recommended()  # the service's hasher: same Argon2 cost per register and login

# -- SQL: one statement per part, as the service sends ------------------------------------------------------------

# The token's open session and its user, by the session's primary key: the service's one auth statement.
AUTH_USER = (
    "SELECT u.id, u.username, u.email, u.bio, u.image, u.role, u.status, s.last_used_at, s.expires_at "
    "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL"
)
OPEN_SESSION = (
    "INSERT INTO sessions (user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent, ip) "
    "VALUES ($1, $2, $3, $3, $4, $5, $6) RETURNING id"
)
SESSION_TTL = timedelta(days=30)

# The columns of an article as one viewer ($1) sees it; the service builds the same list (articles/service.py).
ARTICLE_COLUMNS = """
    a.slug, a.title, a.description, {body}
    (SELECT array_agg(t.name) FROM article_tags at JOIN tags t ON t.id = at.tag_id WHERE at.article_id = a.id),
    a.created_at, a.updated_at,
    EXISTS (SELECT 1 FROM favorites f WHERE f.user_id = $1 AND f.article_id = a.id),
    a.favorites_count, u.username, u.bio, u.image,
    EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $1 AND fo.followee_id = a.author_id)
"""
ARTICLE = f"""
SELECT {ARTICLE_COLUMNS.format(body="a.body,")}
FROM articles a JOIN users u ON u.id = a.author_id WHERE a.slug = $2
"""
# A page: first the ids (the index alone answers, deep offsets included), then the rows for those ids.
PAGE = f"""
SELECT {ARTICLE_COLUMNS.format(body="")}
FROM ({{ids}}) page JOIN articles a ON a.id = page.id JOIN users u ON u.id = a.author_id
ORDER BY page.created_at DESC, page.id DESC
"""
NEWEST = "ORDER BY a.created_at DESC, a.id DESC LIMIT ${limit} OFFSET ${offset}"
TOTAL_ALL = "SELECT value FROM counters WHERE name = 'articles'"
TOTAL_TAG = "SELECT articles_count FROM tags WHERE name = $1"
TOTAL_AUTHOR = "SELECT articles_count FROM users WHERE lower(username) = $1"
TOTAL_FAVORITED = "SELECT favorited_count FROM users WHERE lower(username) = $1"
TOTAL_FEED = "SELECT sum(u.articles_count) FROM follows f JOIN users u ON u.id = f.followee_id WHERE f.follower_id = $1"
ARTICLE_REF = "SELECT id, author_id FROM articles WHERE slug = $1"
COMMENTS = """
SELECT c.id, c.created_at, c.updated_at, c.body, u.username, u.bio, u.image,
       EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $1 AND fo.followee_id = c.author_id)
FROM comments c JOIN users u ON u.id = c.author_id WHERE c.article_id = $2 ORDER BY c.created_at, c.id
"""
PROFILE = """
SELECT u.username, u.bio, u.image,
       EXISTS (SELECT 1 FROM follows fo WHERE fo.follower_id = $1 AND fo.followee_id = u.id)
FROM users u WHERE lower(u.username) = $2
"""
TAGS = "SELECT name FROM tags WHERE articles_count > 0 ORDER BY articles_count DESC, name"


class HTTPError(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        self.status, self.body = status, orjson.dumps({"errors": {field: [message]}})


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # the fastest way to the same text


def profile(username: str, bio: str | None, image: str | None, following: bool) -> dict[str, Any]:
    return {"username": username, "bio": bio, "image": image, "following": following}


def article(row: Any, *, with_body: bool) -> dict[str, Any]:
    if with_body:
        slug, title, description, body, tags, created, updated, fav, count, username, bio, image, fol = row
    else:
        slug, title, description, tags, created, updated, fav, count, username, bio, image, fol = row
    item = {
        "slug": slug,
        "title": title,
        "description": description,
        "tagList": sorted(tags or ()),
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "favorited": fav,
        "favoritesCount": count,
        "author": profile(username, bio, image, fol),
    }
    if with_body:
        item["body"] = body
    return item


def comment(row: Any) -> dict[str, Any]:
    cid, created, updated, body, username, bio, image, fol = row
    return {
        "id": cid,
        "createdAt": timestamp(created),
        "updatedAt": timestamp(updated),
        "body": body,
        "author": profile(username, bio, image, fol),
    }


class Request:
    def __init__(self, app: "Ceiling", scope: Scope, body: bytes) -> None:
        self.app, self.method, self.body = app, scope["method"], body
        self.parts = scope["path"].split("/")[2:]  # "/api/articles/x" -> ["articles", "x"] (already %-decoded)
        self.query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        self.authorization: str | None = None
        self.user_agent: str | None = None
        self.client: str | None = scope["client"][0] if scope.get("client") else None
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"user-agent":
                self.user_agent = value.decode("latin-1")[:512]

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(422, name, "is invalid") from None
        if value < low:
            raise HTTPError(422, name, f"must be greater than or equal to {low}")
        if high is not None and value > high:
            raise HTTPError(422, name, f"must be less than or equal to {high}")
        return value

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise HTTPError(422, "request", "can't be blank") from None

    async def viewer(self, conn: asyncpg.Connection, *, required: bool = False) -> asyncpg.Record | None:
        """The token's active user (one statement), as the service checks it; None without a token."""
        if self.authorization is None:
            if required:
                raise HTTPError(401, "token", "is missing")
            return None
        scheme, _, token = self.authorization.strip().partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            raise HTTPError(401, "token", "is invalid")
        try:
            claims = jwt.decode(
                token.strip(),
                self.app.secret,
                algorithms=[ALGORITHM],
                options={"require_exp": True, "require_sub": True},
            )
            user_id, session_id = int(claims["sub"]), int(claims["sid"])
        except ExpiredSignatureError:
            raise HTTPError(401, "token", "has expired") from None
        except (JWTError, KeyError, ValueError, TypeError):
            raise HTTPError(401, "token", "is invalid") from None
        user = await conn.fetchrow(AUTH_USER, session_id, user_id)
        if user is None or user["status"] != "active" or user["expires_at"] <= datetime.now(UTC):
            raise HTTPError(401, "token", "is invalid")
        return user


def token_for(user_id: int, session_id: int, secret: str) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + TOKEN_TTL).timestamp()),
    }
    claims["sid"] = session_id
    claims["jti"] = uuid.uuid4().hex
    return str(jwt.encode(claims, secret, algorithm=ALGORITHM))


class Ceiling:
    def __init__(self, dsn: str, secret: str, pool_size: int) -> None:
        self.dsn, self.secret, self.pool_size = dsn, secret, pool_size
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(self, scope, body)
        try:
            status, payload = await self.route(request)
        except HTTPError as error:
            status, payload = error.status, error.body
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self.pool_size)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def route(self, request: Request) -> tuple[int, bytes]:
        parts, method = request.parts, request.method
        match parts:
            case ["articles"] if method == "GET":
                return await self.list_articles(request)
            case ["articles", "feed"] if method == "GET":
                return await self.feed(request)
            case ["articles", _] if method == "GET":
                return await self.get_article(request, parts[1])
            case ["articles", _, "comments"] if method == "GET":
                return await self.list_comments(request, parts[1])
            case ["profiles", _] if method == "GET":
                return await self.get_profile(request, parts[1])
            case ["tags"] if method == "GET":
                return await self.tags()
            case ["users"] if method == "POST":
                return await self.register(request)
            case ["users", "login"] if method == "POST":
                return await self.login(request)
            case ["articles"] if method == "POST":
                return await self.create_article(request)
            case ["articles", _, "comments"] if method == "POST":
                return await self.create_comment(request, parts[1])
            case ["articles", _, "favorite"] if method == "POST":
                return await self.favorite(request, parts[1])
        raise HTTPError(404, "route", "not found")

    # -- reads ---------------------------------------------------------------------------------------------------

    def connection(self) -> Any:
        assert self.pool is not None, "the lifespan opens the pool"
        return self.pool.acquire()

    async def list_articles(self, request: Request) -> tuple[int, bytes]:
        tag, author, fan = request.query.get("tag"), request.query.get("author"), request.query.get("favorited")
        async with self.connection() as conn:
            viewer = await request.viewer(conn)  # authentication first, as in the service
            limit, offset = request.integer("limit", 20, 1, 100), request.integer("offset", 0, 0)
            named = [value for value in (tag, author, fan) if value is not None]
            if not named:
                total = await conn.fetchval(TOTAL_ALL)
            elif len(named) == 1:  # one filter: its maintained counter
                count = TOTAL_TAG if tag is not None else TOTAL_AUTHOR if author is not None else TOTAL_FAVORITED
                total = await conn.fetchval(count, tag if tag is not None else named[0].lower())
            else:  # a combination: count its rows (one user's articles at most)
                conditions, args = _filters(tag, author, fan, first=1)
                total = await conn.fetchval(f"SELECT count(*) FROM articles a WHERE {conditions}", *args)
            total = int(total or 0)
            if total <= offset:
                return 200, orjson.dumps({"articles": [], "articlesCount": total})
            if tag is not None and len(named) == 1:  # one tag: walk its own index, already in listing order
                args = [tag]
                ids = (
                    "SELECT at.article_id AS id, at.article_created_at AS created_at FROM article_tags at "
                    "WHERE at.tag_id = (SELECT id FROM tags WHERE name = $2) "
                    "ORDER BY at.article_created_at DESC, at.article_id DESC LIMIT $3 OFFSET $4"
                )
            else:
                conditions, args = _filters(tag, author, fan, first=2)
                n = 2 + len(args)
                newest = NEWEST.format(limit=n, offset=n + 1)
                ids = f"SELECT a.id, a.created_at FROM articles a WHERE {conditions} {newest}"
            rows = await conn.fetch(PAGE.format(ids=ids), viewer["id"] if viewer else None, *args, limit, offset)
        items = [article(row, with_body=False) for row in rows]
        return 200, orjson.dumps({"articles": items, "articlesCount": total})

    async def feed(self, request: Request) -> tuple[int, bytes]:
        async with self.connection() as conn:
            viewer = await request.viewer(conn, required=True)
            assert viewer is not None
            limit, offset = request.integer("limit", 20, 1, 100), request.integer("offset", 0, 0)
            total = int(await conn.fetchval(TOTAL_FEED, viewer["id"]) or 0)
            if total <= offset:
                return 200, orjson.dumps({"articles": [], "articlesCount": total})
            ids = (
                "SELECT a.id, a.created_at FROM articles a "
                "WHERE a.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1) "
                + NEWEST.format(limit=2, offset=3)
            )
            rows = await conn.fetch(PAGE.format(ids=ids), viewer["id"], limit, offset)
        items = [article(row, with_body=False) for row in rows]
        return 200, orjson.dumps({"articles": items, "articlesCount": total})

    async def get_article(self, request: Request, slug: str) -> tuple[int, bytes]:
        async with self.connection() as conn:
            viewer = await request.viewer(conn)
            row = await conn.fetchrow(ARTICLE, viewer["id"] if viewer else None, slug)
        if row is None:
            raise HTTPError(404, "article", "not found")
        return 200, orjson.dumps({"article": article(row, with_body=True)})

    async def list_comments(self, request: Request, slug: str) -> tuple[int, bytes]:
        async with self.connection() as conn:
            viewer = await request.viewer(conn)
            ref = await conn.fetchrow(ARTICLE_REF, slug)
            if ref is None:
                raise HTTPError(404, "article", "not found")
            rows = await conn.fetch(COMMENTS, viewer["id"] if viewer else None, ref["id"])
        return 200, orjson.dumps({"comments": [comment(row) for row in rows]})

    async def get_profile(self, request: Request, username: str) -> tuple[int, bytes]:
        async with self.connection() as conn:
            viewer = await request.viewer(conn)
            row = await conn.fetchrow(PROFILE, viewer["id"] if viewer else None, username.lower())
        if row is None:
            raise HTTPError(404, "profile", "not found")
        return 200, orjson.dumps({"profile": profile(*row)})

    async def tags(self) -> tuple[int, bytes]:
        async with self.connection() as conn:
            rows = await conn.fetch(TAGS)
        return 200, orjson.dumps({"tags": [row[0] for row in rows]})

    # -- writes (the write mix): one transaction each, keeping the same counters in the same lock order ----------

    async def open_session(self, conn: asyncpg.Connection, request: Request, user_id: int) -> tuple[str, str]:
        """A session row as the service writes it at login and registration: (access token, refresh token)."""
        refresh = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        session_id = await conn.fetchval(
            OPEN_SESSION,
            user_id,
            hashlib.sha256(refresh.encode()).hexdigest(),
            now,
            now + SESSION_TTL,
            request.user_agent,
            request.client,
        )
        return token_for(user_id, session_id, self.secret), refresh

    def user_body(self, user: Any, token: str, refresh: str) -> bytes:
        return orjson.dumps(
            {
                "user": {
                    "email": user["email"],
                    "token": token,
                    "username": user["username"],
                    "bio": user["bio"],
                    "image": user["image"],
                    "role": user["role"],
                    "refreshToken": refresh,
                }
            }
        )

    async def register(self, request: Request) -> tuple[int, bytes]:
        username, email, password = _required(request.json(), "user", "username", "email", "password")
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        now = datetime.now(UTC)
        async with self.connection() as conn, conn.transaction():
            try:
                user = await conn.fetchrow(
                    "INSERT INTO users (username, email, password_hash, role, status, created_at, updated_at) "
                    "VALUES ($1, $2, $3, 'user', 'active', $4, $4) RETURNING id, username, email, bio, image, role",
                    username,
                    email,
                    password_hash,
                    now,
                )
            except asyncpg.UniqueViolationError:
                raise HTTPError(409, "username", "has already been taken") from None
            token, refresh = await self.open_session(conn, request, user["id"])
        return 201, self.user_body(user, token, refresh)

    async def login(self, request: Request) -> tuple[int, bytes]:
        email, password = _required(request.json(), "user", "email", "password")
        async with self.connection() as conn:
            user = await conn.fetchrow(
                "SELECT id, username, email, bio, image, role, status, password_hash FROM users "
                "WHERE lower(email) = $1",
                email.lower(),
            )
        ok = await asyncio.to_thread(_hasher.verify, password, user["password_hash"]) if user else False
        if user is None or not ok:
            raise HTTPError(401, "credentials", "invalid")
        async with self.connection() as conn:
            token, refresh = await self.open_session(conn, request, user["id"])
        return 200, self.user_body(user, token, refresh)

    async def create_article(self, request: Request) -> tuple[int, bytes]:
        data = request.json()
        title, description, body = _required(data, "article", "title", "description", "body")
        tag_list = data["article"].get("tagList") or []
        names = sorted({t.strip() for t in tag_list if isinstance(t, str) and t.strip()})
        async with self.connection() as conn, conn.transaction():
            viewer = await request.viewer(conn, required=True)
            assert viewer is not None
            now = datetime.now(UTC)
            slug = slugify(title)
            while await conn.fetchval("SELECT 1 FROM articles WHERE slug = $1", slug):
                slug = with_suffix(slugify(title))
            article_id = await conn.fetchval(
                "INSERT INTO articles (slug, title, description, body, author_id, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
                slug,
                title,
                description,
                body,
                viewer["id"],
                now,
            )
            tag_ids: list[int] = []
            if names:
                await conn.execute("INSERT INTO tags (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", names)
                tag_ids = [r[0] for r in await conn.fetch("SELECT id FROM tags WHERE name = ANY($1)", names)]
                await conn.executemany(
                    "INSERT INTO article_tags (article_id, tag_id, article_created_at) VALUES ($1, $2, $3)",
                    [(article_id, t, now) for t in tag_ids],
                )
            await conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'articles'")
            if tag_ids:
                await conn.execute(
                    "UPDATE tags SET articles_count = articles_count + 1 WHERE id IN "
                    "(SELECT id FROM tags WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE)",
                    tag_ids,
                )
            await conn.execute("UPDATE users SET articles_count = articles_count + 1 WHERE id = $1", viewer["id"])
        item = {
            "slug": slug,
            "title": title,
            "description": description,
            "tagList": names,
            "createdAt": timestamp(now),
            "updatedAt": timestamp(now),
            "favorited": False,
            "favoritesCount": 0,
            "author": profile(viewer["username"], viewer["bio"], viewer["image"], False),
            "body": body,
        }
        return 201, orjson.dumps({"article": item})

    async def create_comment(self, request: Request, slug: str) -> tuple[int, bytes]:
        (text,) = _required(request.json(), "comment", "body")
        async with self.connection() as conn, conn.transaction():
            viewer = await request.viewer(conn, required=True)
            assert viewer is not None
            ref = await conn.fetchrow(ARTICLE_REF, slug)
            if ref is None:
                raise HTTPError(404, "article", "not found")
            now = datetime.now(UTC)
            comment_id = await conn.fetchval(
                "INSERT INTO comments (body, article_id, author_id, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $4) RETURNING id",
                text,
                ref["id"],
                viewer["id"],
                now,
            )
        row = (comment_id, now, now, text, viewer["username"], viewer["bio"], viewer["image"], False)
        return 201, orjson.dumps({"comment": comment(row)})

    async def favorite(self, request: Request, slug: str) -> tuple[int, bytes]:
        async with self.connection() as conn, conn.transaction():
            viewer = await request.viewer(conn, required=True)
            assert viewer is not None
            ref = await conn.fetchrow(ARTICLE_REF, slug)
            if ref is None:
                raise HTTPError(404, "article", "not found")
            status = await conn.execute(
                "INSERT INTO favorites (user_id, article_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                viewer["id"],
                ref["id"],
                datetime.now(UTC),
            )
            if status.endswith(" 1"):  # "INSERT 0 1": a new favorite, so the counters move
                await conn.execute("UPDATE articles SET favorites_count = favorites_count + 1 WHERE id = $1", ref["id"])
                await conn.execute("UPDATE users SET favorited_count = favorited_count + 1 WHERE id = $1", viewer["id"])
            row = await conn.fetchrow(ARTICLE, viewer["id"], slug)
        return 200, orjson.dumps({"article": article(row, with_body=True)})


def _required(data: Any, envelope: str, *fields: str) -> list[str]:
    """The named string fields of ``{envelope: {...}}``; a missing or blank one is a 422, as in the service."""
    inner = data.get(envelope) if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        raise HTTPError(422, envelope, "can't be blank")
    values = []
    for field in fields:
        value = inner.get(field)
        if not isinstance(value, str) or not value.strip():
            raise HTTPError(422, field, "can't be blank")
        values.append(value)
    return values


def _filters(tag: str | None, author: str | None, fan: str | None, *, first: int) -> tuple[str, list[Any]]:
    """The WHERE clause on ``articles a`` for these filters, its placeholders numbered from ``$first``."""
    conditions, args = ["TRUE"], []
    if tag is not None:
        args.append(tag)
        tag_id = f"(SELECT id FROM tags WHERE name = ${first + len(args) - 1})"
        conditions.append(f"EXISTS (SELECT 1 FROM article_tags at WHERE at.article_id = a.id AND at.tag_id = {tag_id})")
    if author is not None:
        args.append(author.lower())
        conditions.append(f"a.author_id = (SELECT id FROM users WHERE lower(username) = ${first + len(args) - 1})")
    if fan is not None:
        args.append(fan.lower())
        fan_id = f"(SELECT id FROM users WHERE lower(username) = ${first + len(args) - 1})"
        conditions.append(f"EXISTS (SELECT 1 FROM favorites fa WHERE fa.article_id = a.id AND fa.user_id = {fan_id})")
    return " AND ".join(conditions), args


def create_app() -> Ceiling:
    return Ceiling(
        os.environ["CEILING_DATABASE_URL"],
        os.environ["CEILING_SECRET_KEY"],
        int(os.environ.get("CEILING_POOL_SIZE", "20")),
    )
