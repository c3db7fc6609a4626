"""Articles, tags and favorites. All SQL for them lives here; every read is a fixed number of statements.

Reads are Core statements built once (at import, or at first use for each combination of filters) and run with
bind parameters: building and hashing an ORM statement per request, then loading ORM objects, cost several times
what the database spent answering (profiled). A listing row carries everything an item shows (author, counts,
flags and tags), so a page is one statement; its total is a second, read from maintained counters
(``articles/counters.py``) rather than a ``count(*)`` that grows with the table.
"""

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.articles import counters
from service.articles.models import Article, Counter, Favorite, Tag, article_tags
from service.articles.slugs import RESERVED, slugify, with_suffix
from service.audit import service as audit
from service.core.db import (
    Query,
    Reads,
    changed_rows,
    insert_ignoring_conflicts,
    later_than,
    storable_text,
    string_list,
)
from service.core.errors import Forbidden, NotFound
from service.profiles.models import Follow
from service.profiles.service import VIEWER_ID, following
from service.users.models import User
from service.users.permissions import Action, can_on
from service.users.service import AuthUser

SLUG_ATTEMPTS = 8

_articles: Table = Article.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
_users: Table = User.__table__  # type: ignore[assignment]
_tags: Table = Tag.__table__  # type: ignore[assignment]
_favorites: Table = Favorite.__table__  # type: ignore[assignment]
_follows: Table = Follow.__table__  # type: ignore[assignment]
_counters: Table = Counter.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Author:
    username: str
    bio: str | None
    image: str | None
    following: bool


@dataclass(frozen=True, slots=True)
class ArticleView:
    """An article as one viewer sees it: counts and flags computed in SQL."""

    slug: str
    title: str
    description: str
    body: str  # "" in listings, which never show it (and never read it)
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    favorited: bool
    favorites_count: int
    author: Author


@dataclass(frozen=True, slots=True)
class ArticleRef:
    """What most routes need of the article in their path: which row it is, and who wrote it."""

    id: int
    author_id: int


# ---------------------------------------------------------------------------------------------------------------
# Statements


def _tag_names() -> ColumnElement[list[str]]:
    """The article's tags, aggregated into one column of its row."""
    named = article_tags.join(_tags, _tags.c.id == article_tags.c.tag_id)
    return (
        select(string_list(_tags.c.name))
        .select_from(named)
        .where(article_tags.c.article_id == _articles.c.id)
        .scalar_subquery()
    )


def _view_columns(*, with_body: bool) -> list[ColumnElement[Any]]:
    favorited = exists().where(_favorites.c.user_id == VIEWER_ID, _favorites.c.article_id == _articles.c.id)
    body = [_articles.c.body] if with_body else []
    return [
        _articles.c.slug,
        _articles.c.title,
        _articles.c.description,
        *body,
        _tag_names().label("tags"),
        _articles.c.created_at,
        _articles.c.updated_at,
        favorited.label("favorited"),
        _articles.c.favorites_count,
        _users.c.username,
        _users.c.bio,
        _users.c.image,
        following(_articles.c.author_id).label("following"),
    ]


def _to_view(row: Any, *, with_body: bool) -> ArticleView:
    if with_body:
        slug, title, description, body, tags, created, updated, fav, count, username, bio, image, fol = row
    else:
        slug, title, description, tags, created, updated, fav, count, username, bio, image, fol = row
        body = ""
    # Sorted here, not by the database: its collation (e.g. ICU "en") may order "a", "A", "_x" differently from
    # the code-point order ``create_article`` returns, and every response must list the tags identically.
    author = Author(username, bio, image, bool(fol))
    return ArticleView(slug, title, description, body, sorted(tags or ()), created, updated, bool(fav), count, author)


_ARTICLE_BY_SLUG = Query(
    select(*_view_columns(with_body=True))
    .select_from(_articles.join(_users, _users.c.id == _articles.c.author_id))
    .where(_articles.c.slug == bindparam("slug"))
)
_REF_BY_SLUG = Query(select(_articles.c.id, _articles.c.author_id).where(_articles.c.slug == bindparam("slug")))
_TAGS_IN_USE = Query(
    select(_tags.c.name).where(_tags.c.articles_count > 0).order_by(_tags.c.articles_count.desc(), _tags.c.name)
)

# Filters name rows through their own aliases, so no lookup is mistaken for the author joined into a listing.
_named = _users.alias("named")
_fans = _favorites.alias("fans")
_TAG_ID = select(_tags.c.id).where(_tags.c.name == bindparam("tag")).scalar_subquery()
_AUTHOR_ID = select(_named.c.id).where(func.lower(_named.c.username) == bindparam("author")).scalar_subquery()
_FAN_ID = select(_named.c.id).where(func.lower(_named.c.username) == bindparam("favorited")).scalar_subquery()
_NEWEST_FIRST = (_articles.c.created_at.desc(), _articles.c.id.desc())  # a tie goes to the later-created

FEED = "feed"  # a listing "filter" of its own: articles by the authors the viewer follows


def _conditions(filters: frozenset[str]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if "tag" in filters:
        conditions.append(exists().where(article_tags.c.article_id == _articles.c.id, article_tags.c.tag_id == _TAG_ID))
    if "author" in filters:
        conditions.append(_articles.c.author_id == _AUTHOR_ID)
    if "favorited" in filters:
        conditions.append(exists().where(_fans.c.article_id == _articles.c.id, _fans.c.user_id == _FAN_ID))
    if FEED in filters:
        followed = select(_follows.c.followee_id).where(_follows.c.follower_id == VIEWER_ID)
        conditions.append(_articles.c.author_id.in_(followed))
    return conditions


def _page_ids(filters: frozenset[str]) -> Subquery:
    """The ids (and creation times) of one page, newest first. Only ids: the index alone answers it, so a deep
    ``offset`` skips index entries, not whole rows with their subqueries."""
    page: Select[Any]
    if filters == {"tag"}:  # walk the tag's own index, already in listing order (article_tags.article_created_at)
        created = article_tags.c.article_created_at
        page = (
            select(article_tags.c.article_id.label("id"), created.label("created_at"))
            .where(article_tags.c.tag_id == _TAG_ID)
            .order_by(created.desc(), article_tags.c.article_id.desc())
        )
    else:
        page = select(_articles.c.id, _articles.c.created_at).where(*_conditions(filters)).order_by(*_NEWEST_FIRST)
    return page.limit(bindparam("limit")).offset(bindparam("offset")).subquery("page")


@cache  # built once per combination of filters (at most 9), then reused with new parameters
def _listing(filters: frozenset[str]) -> tuple[Query, Query]:
    """(total, page) statements for a listing with these filters."""
    page = _page_ids(filters)
    rows = (
        select(*_view_columns(with_body=False))
        .select_from(
            page.join(_articles, _articles.c.id == page.c.id).join(_users, _users.c.id == _articles.c.author_id)
        )
        .order_by(page.c.created_at.desc(), page.c.id.desc())
    )
    return Query(_total(filters)), Query(rows)


def _total(filters: frozenset[str]) -> Select[Any]:
    """A listing's ``articlesCount``: one maintained counter where one exists; a combination of filters counts
    its rows, which stays cheap because ``author`` or ``favorited`` narrows it to one user's articles."""
    by_name = func.lower(_users.c.username)
    if not filters:
        return select(_counters.c.value).where(_counters.c.name == counters.ARTICLES)
    if filters == {"tag"}:
        return select(_tags.c.articles_count).where(_tags.c.name == bindparam("tag"))
    if filters == {"author"}:
        return select(_users.c.articles_count).where(by_name == bindparam("author"))
    if filters == {"favorited"}:
        return select(_users.c.favorited_count).where(by_name == bindparam("favorited"))
    if filters == {FEED}:
        followed = _follows.join(_users, _users.c.id == _follows.c.followee_id)
        return (
            select(func.sum(_users.c.articles_count)).select_from(followed).where(_follows.c.follower_id == VIEWER_ID)
        )
    return select(func.count()).select_from(_articles).where(*_conditions(filters))


# ---------------------------------------------------------------------------------------------------------------
# Reads


def _unstorable(*values: str | None) -> bool:
    """Text no row can hold matches nothing (and the database would refuse it even as a parameter)."""
    return any(value is not None and not storable_text(value) for value in values)


async def get_by_slug(session: AsyncSession, slug: str) -> Article | None:
    """The ORM article, for the route that edits it, row-locked (the lock order's first step, in the same
    statement): a concurrent delete either waits for the edit, or has committed and the edit finds nothing (404)."""
    if _unstorable(slug):
        return None
    return (await session.scalars(select(Article).where(Article.slug == slug).with_for_update())).one_or_none()


async def get_ref(db: Reads, slug: str) -> ArticleRef | None:
    if _unstorable(slug):
        return None
    row = await _REF_BY_SLUG.first(db, slug=slug)
    return ArticleRef(row[0], row[1]) if row is not None else None


async def get_view(db: Reads, slug: str, viewer_id: int | None) -> ArticleView:
    if _unstorable(slug):
        raise NotFound("article", "not found")
    row = await _ARTICLE_BY_SLUG.first(db, slug=slug, viewer_id=viewer_id)
    if row is None:
        raise NotFound("article", "not found")
    return _to_view(row, with_body=True)


async def _page(
    db: Reads, filters: frozenset[str], params: dict[str, Any], limit: int, offset: int
) -> tuple[list[ArticleView], int]:
    total_query, page_query = _listing(filters)
    total = int(await total_query.scalar(db, **params) or 0)  # None: an unknown tag or user counts nothing
    if total <= offset:
        return [], total
    rows = await page_query.all(db, **params, limit=limit, offset=offset)
    return [_to_view(row, with_body=False) for row in rows], total


async def list_articles(
    db: Reads,
    viewer_id: int | None,
    *,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[ArticleView], int]:
    if _unstorable(tag, author, favorited):
        return [], 0
    params: dict[str, Any] = {"viewer_id": viewer_id}
    if tag is not None:
        params["tag"] = tag
    if author is not None:
        params["author"] = author.lower()  # usernames are unique case-insensitively (index on lower(username))
    if favorited is not None:
        params["favorited"] = favorited.lower()
    filters = frozenset(name for name in ("tag", "author", "favorited") if name in params)
    return await _page(db, filters, params, limit, offset)


async def feed(db: Reads, viewer_id: int, *, limit: int = 20, offset: int = 0) -> tuple[list[ArticleView], int]:
    return await _page(db, frozenset({FEED}), {"viewer_id": viewer_id}, limit, offset)


async def list_tags(db: Reads) -> list[str]:
    """Every tag in use, most used first, then by name: read from the tags' own counters."""
    return [row[0] for row in await _TAGS_IN_USE.all(db)]


# ---------------------------------------------------------------------------------------------------------------
# Writes. Counters change in the same transaction, in the lock order that articles/counters.py describes.


async def _save_with_unique_slug(session: AsyncSession, article: Article, base: str) -> None:
    """Insert or update under a slug nobody holds; a concurrent taker of the same slug makes us retry."""
    candidate = base
    for _ in range(SLUG_ATTEMPTS):
        holder = select(Article.id).where(Article.slug == candidate, Article.id != article.id)
        taken = candidate in RESERVED or (await session.scalar(holder)) is not None
        if not taken:
            try:
                async with session.begin_nested():
                    article.slug = candidate
                    session.add(article)
                    await session.flush()
                return
            except IntegrityError:
                # Lost a race for this slug. The savepoint's rollback expired a persistent article (a new one is
                # transient again): reload it here, as a lazy load on the next attribute read fails under asyncio.
                if inspect(article).persistent:
                    await session.refresh(article)
        candidate = with_suffix(base)
    raise RuntimeError(f"no free slug for {base!r} after {SLUG_ATTEMPTS} attempts")


async def _tag_ids(session: AsyncSession, names: list[str]) -> list[int]:
    """Ids of these tags, creating the missing ones (in name order: two writers of the same new tags then wait for
    each other in the same order, never in a cycle)."""
    if not names:
        return []
    rows = [{"name": name} for name in sorted(names)]
    await session.execute(insert_ignoring_conflicts(session, Tag).values(rows))
    return list((await session.scalars(select(Tag.id).where(Tag.name.in_(names)))).all())


async def _attach_tags(session: AsyncSession, article: Article, tag_ids: list[int]) -> None:
    if tag_ids:
        rows = [{"article_id": article.id, "tag_id": t, "article_created_at": article.created_at} for t in tag_ids]
        await session.execute(insert(article_tags), rows)


async def create_article(
    session: AsyncSession, author: AuthUser, *, title: str, description: str, body: str, tags: list[str]
) -> ArticleView:
    article = Article(title=title, description=description, body=body, author_id=author.id)
    await _save_with_unique_slug(session, article, slugify(title))
    tag_ids = await _tag_ids(session, tags)
    await counters.articles_added(session, author.id, tag_ids)  # before the links: the lock order of _replace_tags
    await _attach_tags(session, article, tag_ids)
    return ArticleView(
        article.slug,
        title,
        description,
        body,
        sorted(tags),
        article.created_at,
        article.updated_at,
        favorited=False,
        favorites_count=0,
        author=Author(author.username, author.bio, author.image, following=False),
    )


def ensure_can_edit(article: Article, user: AuthUser) -> None:
    """Only the author edits an article, whatever the role (the permission table, users/permissions.py)."""
    if not can_on(user, article.author_id, own=Action.EDIT_OWN_ARTICLE, other=Action.EDIT_ANY_ARTICLE):
        raise Forbidden("article", "forbidden")


def ensure_can_delete(article: ArticleRef, user: AuthUser) -> None:
    """The author deletes an article, and so may moderators and admins (contract B4; users/permissions.py)."""
    if not can_on(user, article.author_id, own=Action.DELETE_OWN_ARTICLE, other=Action.DELETE_ANY_ARTICLE):
        raise Forbidden("article", "forbidden")


async def delete_article_as(session: AsyncSession, article: ArticleRef, slug: str, user: AuthUser) -> None:
    """``DELETE /articles/{slug}``: by its author, or by a moderator or admin, which the audit log records (in
    this transaction: no entry without the deletion, no deletion without its entry)."""
    ensure_can_delete(article, user)
    await delete_article(session, article)
    if article.author_id != user.id:
        audit.record(session, audit.Actor.of(user), "article.delete", f"article:{slug}")


async def _replace_tags(session: AsyncSession, article: Article, names: list[str]) -> None:
    """Give the article exactly these tags; only the tags that come or go change their counters."""
    current = set(
        (await session.scalars(select(article_tags.c.tag_id).where(article_tags.c.article_id == article.id))).all()
    )
    wanted = set(await _tag_ids(session, names))
    gone, new = current - wanted, wanted - current
    if gone:
        await session.execute(
            delete(article_tags).where(article_tags.c.article_id == article.id, article_tags.c.tag_id.in_(gone))
        )
    # Lock (and count) the tags before linking the new ones: the link's foreign-key check takes a weaker lock on the
    # tag row, and upgrading it afterwards can deadlock against another writer queued for the same row (seen here).
    await counters.tags_changed(session, added=new, removed=gone)
    await _attach_tags(session, article, sorted(new))


async def update_article(session: AsyncSession, article: Article, changes: dict[str, Any]) -> None:
    """Apply a partial update. A new title regenerates the slug; body or tags never do."""
    new_base = slugify(changes["title"]) if "title" in changes else None
    if new_base == slugify(article.title):
        new_base = None  # same words, same slug: a bookmarked URL keeps working
    for field in ("title", "description", "body"):
        if field in changes:
            setattr(article, field, changes[field])
    article.updated_at = later_than(article.updated_at)
    await session.flush()  # outside the slug's savepoint, so losing a slug race cannot undo these changes
    if new_base is not None:
        await _save_with_unique_slug(session, article, new_base)
    if "tag_list" in changes:
        await _replace_tags(session, article, changes["tag_list"])


async def delete_article(session: AsyncSession, article: ArticleRef) -> None:
    # First: in-flight favorites of it finish, new ones wait; a delete that committed meanwhile leaves nothing.
    if not await counters.lock_article(session, article.id):
        raise NotFound("article", "not found")
    tag_ids = (
        await session.scalars(select(article_tags.c.tag_id).where(article_tags.c.article_id == article.id))
    ).all()
    await counters.articles_added(session, article.author_id, list(tag_ids), delta=-1)
    await counters.fans_lost(session, article.id)
    await session.execute(delete(Article).where(Article.id == article.id))  # tags and favorites go with it


async def favorite(session: AsyncSession, user_id: int, article: ArticleRef) -> None:
    """Idempotent: a second favorite inserts nothing, so it counts nothing."""
    stmt = insert_ignoring_conflicts(session, Favorite).values(user_id=user_id, article_id=article.id)
    try:
        inserted = await changed_rows(session, stmt)
    except IntegrityError:  # the article was deleted a moment ago (its foreign key is gone)
        raise NotFound("article", "not found") from None
    if inserted:
        await counters.favorite_added(session, article.id, user_id)


async def unfavorite(session: AsyncSession, user_id: int, article: ArticleRef) -> None:
    if not await counters.lock_article(session, article.id, key_share=True):  # the lock order: the article first
        raise NotFound("article", "not found")
    stmt = delete(Favorite).where(Favorite.user_id == user_id, Favorite.article_id == article.id)
    if await changed_rows(session, stmt):
        await counters.favorite_added(session, article.id, user_id, delta=-1)
