"""Articles, tags and favorites. All SQL for them lives here; every read is a fixed number of statements."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, false, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager, defer, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from service.articles.models import Article, Favorite, Tag, article_tags
from service.articles.slugs import RESERVED, slugify, with_suffix
from service.core.db import insert_ignoring_conflicts, later_than, storable_text
from service.core.errors import Forbidden, NotFound
from service.profiles.models import Follow
from service.profiles.service import following_expr
from service.users.models import STAFF_ROLES, User

SLUG_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class ArticleView:
    """An article as one viewer sees it: counts and flags computed in SQL."""

    article: Article
    tags: list[str]
    favorites_count: int
    favorited: bool
    following: bool


def _favorited_expr(viewer_id: int | None) -> ColumnElement[bool]:
    if viewer_id is None:
        return false()
    return exists().where(Favorite.article_id == Article.id, Favorite.user_id == viewer_id)


def _favorites_count_expr() -> Any:
    return select(func.count()).select_from(Favorite).where(Favorite.article_id == Article.id).scalar_subquery()


def _views_query(viewer_id: int | None, *, with_body: bool) -> Select[Any]:
    """One statement for articles, authors, counts and flags; tags follow in one more (selectinload)."""
    stmt = (
        select(
            Article,
            _favorites_count_expr().label("favorites_count"),
            _favorited_expr(viewer_id).label("favorited"),
            following_expr(viewer_id, Article.author_id).label("following"),
        )
        .join(Article.author)
        .options(contains_eager(Article.author), selectinload(Article.tags))
    )
    if not with_body:
        stmt = stmt.options(defer(Article.body, raiseload=True))  # list items never carry the body
    return stmt


def _to_views(rows: Any) -> list[ArticleView]:
    # Sorted here, not by the database: its collation (e.g. ICU "en") may order "a", "A", "_x" differently from
    # the code-point order ``create_article`` returns, and every response must list the tags identically.
    return [
        ArticleView(article, sorted(tag.name for tag in article.tags), int(count), bool(fav), bool(fol))
        for article, count, fav, fol in rows
    ]


# ---------------------------------------------------------------------------------------------------------------
# Reads


def _unstorable(*values: str | None) -> bool:
    """Text no row can hold matches nothing (and the database would refuse it even as a parameter)."""
    return any(value is not None and not storable_text(value) for value in values)


async def get_by_slug(session: AsyncSession, slug: str) -> Article | None:
    if _unstorable(slug):
        return None
    return (await session.scalars(select(Article).where(Article.slug == slug))).one_or_none()


async def get_view(session: AsyncSession, slug: str, viewer_id: int | None) -> ArticleView:
    if _unstorable(slug):
        raise NotFound("article", "not found")
    rows = (await session.execute(_views_query(viewer_id, with_body=True).where(Article.slug == slug))).all()
    if not rows:
        raise NotFound("article", "not found")
    return _to_views(rows)[0]


def _list_filters(*, tag: str | None, author: str | None, favorited: str | None) -> list[ColumnElement[bool]]:
    if _unstorable(tag, author, favorited):
        return [false()]
    filters: list[ColumnElement[bool]] = []
    if tag is not None:
        tagged = select(article_tags.c.article_id).join(Tag, Tag.id == article_tags.c.tag_id).where(Tag.name == tag)
        filters.append(Article.id.in_(tagged))
    if author is not None:
        filters.append(Article.author_id.in_(select(User.id).where(func.lower(User.username) == author.lower())))
    if favorited is not None:
        fans = (
            select(Favorite.article_id)
            .join(User, User.id == Favorite.user_id)
            .where(func.lower(User.username) == favorited.lower())
        )
        filters.append(Article.id.in_(fans))
    return filters


async def count_articles(session: AsyncSession, filters: list[ColumnElement[bool]]) -> int:
    """The total of a listing. The one place to swap ``count(*)`` for maintained counters at scale."""
    return int(await session.scalar(select(func.count()).select_from(Article).where(*filters)) or 0)


async def _page(
    session: AsyncSession, viewer_id: int | None, filters: list[ColumnElement[bool]], limit: int, offset: int
) -> tuple[list[ArticleView], int]:
    total = await count_articles(session, filters)
    if total <= offset:
        return [], total
    stmt = (
        _views_query(viewer_id, with_body=False)
        .where(*filters)
        .order_by(Article.created_at.desc(), Article.id.desc())  # newest first; later-created wins a tie
        .limit(limit)
        .offset(offset)
    )
    return _to_views((await session.execute(stmt)).all()), total


async def list_articles(
    session: AsyncSession,
    viewer_id: int | None,
    *,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[ArticleView], int]:
    filters = _list_filters(tag=tag, author=author, favorited=favorited)
    return await _page(session, viewer_id, filters, limit, offset)


async def feed(
    session: AsyncSession, viewer_id: int, *, limit: int = 20, offset: int = 0
) -> tuple[list[ArticleView], int]:
    followed = select(Follow.followee_id).where(Follow.follower_id == viewer_id)
    return await _page(session, viewer_id, [Article.author_id.in_(followed)], limit, offset)


async def list_tags(session: AsyncSession) -> list[str]:
    """Every tag in use, most used first, then by name."""
    uses = func.count(article_tags.c.article_id)
    stmt = (
        select(Tag.name)
        .join(article_tags, article_tags.c.tag_id == Tag.id)
        .group_by(Tag.id, Tag.name)
        .order_by(uses.desc(), Tag.name)
    )
    return list((await session.scalars(stmt)).all())


# ---------------------------------------------------------------------------------------------------------------
# Writes


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


async def _set_tags(session: AsyncSession, article_id: int, names: list[str], *, replace: bool) -> None:
    if replace:
        await session.execute(delete(article_tags).where(article_tags.c.article_id == article_id))
    if not names:
        return
    await session.execute(insert_ignoring_conflicts(session, Tag).values([{"name": name} for name in names]))
    tag_ids = (await session.scalars(select(Tag.id).where(Tag.name.in_(names)))).all()
    await session.execute(insert(article_tags), [{"article_id": article_id, "tag_id": tag_id} for tag_id in tag_ids])


async def create_article(
    session: AsyncSession, author: User, *, title: str, description: str, body: str, tags: list[str]
) -> ArticleView:
    article = Article(title=title, description=description, body=body, author_id=author.id)
    await _save_with_unique_slug(session, article, slugify(title))
    await _set_tags(session, article.id, tags, replace=False)
    set_committed_value(article, "author", author)  # known already: no query to read it back
    return ArticleView(article, sorted(tags), favorites_count=0, favorited=False, following=False)


def ensure_author(article: Article, user: User) -> None:
    """Only the author edits an article."""
    if article.author_id != user.id:
        raise Forbidden("article", "forbidden")


def ensure_can_delete(article: Article, user: User) -> None:
    """The author deletes an article, and so may moderators and admins (contract B4)."""
    if article.author_id != user.id and user.role not in STAFF_ROLES:
        raise Forbidden("article", "forbidden")


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
        await _set_tags(session, article.id, changes["tag_list"], replace=True)


async def delete_article(session: AsyncSession, article: Article) -> None:
    await session.execute(delete(Article).where(Article.id == article.id))


async def favorite(session: AsyncSession, user: User, article: Article) -> None:
    """Idempotent; the count is always computed from the rows, so concurrent favorites stay exact."""
    await session.execute(insert_ignoring_conflicts(session, Favorite).values(user_id=user.id, article_id=article.id))


async def unfavorite(session: AsyncSession, user: User, article: Article) -> None:
    await session.execute(delete(Favorite).where(Favorite.user_id == user.id, Favorite.article_id == article.id))
