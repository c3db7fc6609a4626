"""Maintained counters: exact totals without a ``count(*)`` that grows with the tables.

What is counted, and where it is kept:

=============================  ==========================  ====================================
count                          column                      serves
=============================  ==========================  ====================================
all articles                   ``counters['articles']``    ``articlesCount`` of an unfiltered list
articles with a tag            ``tags.articles_count``     ``?tag=``, and the order of ``GET /tags``
articles by an author          ``users.articles_count``    ``?author=``, the feed (sum over followees)
articles a user favorited      ``users.favorited_count``   ``?favorited=``
favorites of an article        ``articles.favorites_count`` ``favoritesCount``
=============================  ==========================  ====================================

Every change is made by the service function that makes the change it counts, in the same transaction, as an
increment (``x = x + 1``): concurrent changes add up, and a rolled-back change takes its increment with it.
The functions below are the only writers.

Lock order. A transaction that changes counters takes its row locks in this order: the article it deletes or
edits, then ``counters``, then ``tags``, then ``articles.favorites_count``, then ``users``. Two transactions
then never wait for each other in a cycle (a deadlock), and creating and deleting articles queue on the one
``counters`` row, which is held only from the counting statements to the commit.
A user's deletion (``user_removed``) changes many articles: it locks all of them first, in id order, and takes
the rows of each later step in id order too.

``check`` recounts everything from one snapshot and lists differences (no locks); ``rebuild`` does the same under
table locks that keep writers out (readers go on) and rewrites only the rows that differ.
"""

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Table, case, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.articles.models import Article, Counter, Favorite, Tag, article_tags
from service.users.models import User

ARTICLES = "articles"  # the name of the total of every article in ``counters``

_counters: Table = Counter.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
_articles: Table = Article.__table__  # type: ignore[assignment]
_tags: Table = Tag.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]
_favorites: Table = Favorite.__table__  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------------------------
# Keeping them: called by the articles service, in lock order within each function.


async def articles_added(session: AsyncSession, author_id: int, tag_ids: Collection[int], delta: int = 1) -> None:
    """An article by ``author_id`` with these tags was created (``delta=1``) or is being deleted (``-1``)."""
    await session.execute(update(_counters).where(_counters.c.name == ARTICLES).values(value=_counters.c.value + delta))
    await tags_added(session, tag_ids, delta)
    await session.execute(
        update(_users).where(_users.c.id == author_id).values(articles_count=_users.c.articles_count + delta)
    )


def _tags_in_lock_order(tag_ids: Collection[int]) -> ColumnElement[bool]:
    """``tags.id IN (...)``, locking those rows in id order first: two transactions that both change the tags x
    and y then never hold one each while waiting for the other. ``FOR NO KEY UPDATE``, the lock an UPDATE takes
    anyway, so it never waits for a transaction that merely references the tag (an article_tags insert).
    (SQLite, one writer at a time, has no row locks: the clause is left out there.)"""
    in_order = select(_tags.c.id).where(_tags.c.id.in_(tag_ids)).order_by(_tags.c.id).with_for_update(key_share=True)
    return _tags.c.id.in_(in_order)


async def tags_added(session: AsyncSession, tag_ids: Collection[int], delta: int = 1) -> None:
    """One more (or, with ``delta=-1``, one fewer) article carries each of these tags."""
    if tag_ids:
        await session.execute(
            update(_tags).where(_tags_in_lock_order(tag_ids)).values(articles_count=_tags.c.articles_count + delta)
        )


async def tags_changed(session: AsyncSession, *, added: Collection[int], removed: Collection[int]) -> None:
    """An article gained the ``added`` tags and lost the ``removed`` ones: one statement, so one lock order."""
    if added or removed:
        step = case((_tags.c.id.in_(added), 1), else_=-1)
        await session.execute(
            update(_tags)
            .where(_tags_in_lock_order([*added, *removed]))
            .values(articles_count=_tags.c.articles_count + step)
        )


async def lock_article(session: AsyncSession, article_id: int, *, key_share: bool = False) -> bool:
    """Take the article's row lock before anything else (the first step of the lock order); False if it is gone.

    The default (``FOR UPDATE``, for a delete): a favorite of it already inserted finishes first (its count is then
    seen), and a new one waits and then finds it gone. ``key_share`` (``FOR NO KEY UPDATE``, the lock an update of
    its ``favorites_count`` takes anyway) for an unfavorite: it queues behind a delete instead of holding the
    favorite row the delete's cascade needs while waiting for the article (a deadlock).
    """
    stmt = select(_articles.c.id).where(_articles.c.id == article_id).with_for_update(key_share=key_share)
    return (await session.execute(stmt)).first() is not None


async def favorite_added(session: AsyncSession, article_id: int, user_id: int, delta: int = 1) -> None:
    """``user_id`` favorited ``article_id`` (``delta=1``) or took the favorite back (``-1``)."""
    await session.execute(
        update(_articles)
        .where(_articles.c.id == article_id)
        .values(favorites_count=_articles.c.favorites_count + delta)
    )
    await session.execute(
        update(_users).where(_users.c.id == user_id).values(favorited_count=_users.c.favorited_count + delta)
    )


async def fans_lost(session: AsyncSession, article_id: int) -> None:
    """The article is about to be deleted: everyone who favorited it has one favorite fewer."""
    fans = select(_favorites.c.user_id).where(_favorites.c.article_id == article_id)
    await session.execute(
        update(_users).where(_users.c.id.in_(fans)).values(favorited_count=_users.c.favorited_count - 1)
    )


async def user_removed(session: AsyncSession, user_id: int) -> None:
    """The user is about to be deleted with everything they made (the caller deletes the ``users`` row next, and
    the foreign keys cascade to their articles, favorites, comments and follows): take back every count they are
    part of. Set-based, one statement per counter whatever the number of articles, and in lock order:

    1. the articles that change, in id order: theirs (deleted) and those they favorited (one favorite fewer), so
       favorites of them in flight finish first and new ones wait, then find the article (or the user) gone;
    2. ``counters``; 3. ``tags``, in id order; 4. ``articles.favorites_count`` (rows locked in step 1);
    5. ``users``, in id order: whoever favorited their articles has that many favorites fewer.

    Their own ``users`` row needs no change: it goes. Not covered: writes *by the user being deleted* that race
    their own deletion (suspend first to stop those: a suspended account's tokens stop at once).
    """
    theirs = _articles.c.author_id == user_id
    their_favorites = select(_favorites.c.article_id).where(_favorites.c.user_id == user_id)
    await session.execute(
        select(_articles.c.id)
        .where(or_(theirs, _articles.c.id.in_(their_favorites)))
        .order_by(_articles.c.id)
        .with_for_update()
    )
    written = select(func.count()).select_from(_articles).where(theirs).scalar_subquery()
    await session.execute(
        update(_counters).where(_counters.c.name == ARTICLES).values(value=_counters.c.value - written)
    )
    tagged = article_tags.join(_articles, _articles.c.id == article_tags.c.article_id)
    tag_ids = (await session.scalars(select(article_tags.c.tag_id).select_from(tagged).where(theirs).distinct())).all()
    if tag_ids:
        tagged_by_them = (
            select(func.count())
            .select_from(tagged)
            .where(article_tags.c.tag_id == _tags.c.id, theirs)
            .scalar_subquery()
        )
        await session.execute(
            update(_tags)
            .where(_tags_in_lock_order(tag_ids))
            .values(articles_count=_tags.c.articles_count - tagged_by_them)
        )
    await session.execute(
        update(_articles)
        .where(_articles.c.id.in_(their_favorites), _articles.c.author_id != user_id)
        .values(favorites_count=_articles.c.favorites_count - 1)
    )
    of_their_articles = _favorites.join(_articles, _articles.c.id == _favorites.c.article_id)
    fans = select(_favorites.c.user_id).select_from(of_their_articles).where(theirs, _favorites.c.user_id != user_id)
    in_order = select(_users.c.id).where(_users.c.id.in_(fans)).order_by(_users.c.id).with_for_update(key_share=True)
    favorited_of_theirs = (
        select(func.count())
        .select_from(of_their_articles)
        .where(_favorites.c.user_id == _users.c.id, theirs)
        .scalar_subquery()
    )
    await session.execute(
        update(_users)
        .where(_users.c.id.in_(in_order))
        .values(favorited_count=_users.c.favorited_count - favorited_of_theirs)
    )


# ---------------------------------------------------------------------------------------------------------------
# Checking and rebuilding them (``service counters check|rebuild``, and ``service seed`` after a bulk load).


def _count(table: Table, condition: ColumnElement[bool]) -> ColumnElement[int]:
    return select(func.count()).select_from(table).where(condition).scalar_subquery()


def _recounts() -> dict[Table, dict[str, ColumnElement[int]]]:
    """For each table with counters: each counter column and the correlated recount of one row's value."""
    return {
        _tags: {"articles_count": _count(article_tags, article_tags.c.tag_id == _tags.c.id)},
        _users: {
            "articles_count": _count(_articles, _articles.c.author_id == _users.c.id),
            "favorited_count": _count(_favorites, _favorites.c.user_id == _users.c.id),
        },
        _articles: {"favorites_count": _count(_favorites, _favorites.c.article_id == _articles.c.id)},
    }


@dataclass(frozen=True, slots=True)
class Difference:
    counter: str  # e.g. ``tags.articles_count``, or ``counters.articles``
    key: int | str  # the row's id (or the counter's name)
    stored: int | None  # None: the row that should hold it is missing
    actual: int


async def _total_difference(conn: AsyncConnection) -> Difference | None:
    stored = (await conn.execute(select(_counters.c.value).where(_counters.c.name == ARTICLES))).scalar()
    actual = int((await conn.execute(select(func.count()).select_from(_articles))).scalar_one())
    if stored == actual:
        return None
    return Difference(f"counters.{ARTICLES}", ARTICLES, None if stored is None else int(stored), actual)


async def differences(conn: AsyncConnection, limit: int | None = None) -> list[Difference]:
    """Every counter whose stored value is not what a recount gives (at most ``limit`` per kind)."""
    found: list[Difference] = []
    total = await _total_difference(conn)
    if total is not None:
        found.append(total)
    for table, columns in _recounts().items():
        for column, actual in columns.items():
            stored = table.c[column]
            stmt = select(table.c.id, stored, actual).where(stored != actual)
            if limit is not None:
                stmt = stmt.order_by(table.c.id).limit(limit)
            rows = (await conn.execute(stmt)).all()
            found.extend(Difference(f"{table.name}.{column}", int(key), int(s), int(a)) for key, s, a in rows)
    return found


async def lock_for_recount(conn: AsyncConnection) -> None:
    """Keep writers of counted rows out until commit (readers go on): a recount must not race an increment.

    SQLite needs nothing: its write transaction (``BEGIN IMMEDIATE``) already excludes every other writer.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("LOCK TABLE counters, tags, articles, article_tags, favorites, users IN SHARE ROW EXCLUSIVE MODE")
        )


async def rebuild(conn: AsyncConnection) -> int:
    """Set every counter to its recount; returns how many rows were rewritten. Call ``lock_for_recount`` first."""
    fixed = 0
    actual_total = select(func.count()).select_from(_articles).scalar_subquery()
    result = await conn.execute(
        update(_counters)
        .where(_counters.c.name == ARTICLES, _counters.c.value != actual_total)
        .values(value=actual_total)
    )
    fixed += result.rowcount
    if not (await conn.execute(select(literal(1)).select_from(_counters).where(_counters.c.name == ARTICLES))).first():
        await conn.execute(_counters.insert().values(name=ARTICLES, value=actual_total))
        fixed += 1
    for table, columns in _recounts().items():
        wrong = or_(*(table.c[column] != actual for column, actual in columns.items()))
        result = await conn.execute(update(table).where(wrong).values(columns))  # one rewrite per row at most
        fixed += result.rowcount
    return fixed
