"""Comments on articles: a conversation read top to bottom."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.articles.service import ArticleRef
from service.audit import service as audit
from service.comments.models import Comment
from service.core.db import Query, Reads, changed_rows
from service.core.errors import Forbidden, NotFound
from service.profiles.service import following
from service.users.models import User
from service.users.permissions import Action, can_on
from service.users.service import AuthUser

_comments: Table = Comment.__table__  # type: ignore[assignment]  # a declarative class's table is a Table
_users: Table = User.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class CommentView:
    id: int
    created_at: datetime
    updated_at: datetime
    body: str
    username: str
    bio: str | None
    image: str | None
    following: bool


# Built once (see articles/service.py): oldest first, ties by id, each with whether the viewer follows its author.
_COMMENTS_OF_ARTICLE = Query(
    select(
        _comments.c.id,
        _comments.c.created_at,
        _comments.c.updated_at,
        _comments.c.body,
        _users.c.username,
        _users.c.bio,
        _users.c.image,
        following(_comments.c.author_id),
    )
    .select_from(_comments.join(_users, _users.c.id == _comments.c.author_id))
    .where(_comments.c.article_id == bindparam("article_id"))
    .order_by(_comments.c.created_at, _comments.c.id)
)


def _to_view(row: Any) -> CommentView:
    return CommentView(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


async def list_comments(db: Reads, article: ArticleRef, viewer_id: int | None) -> list[CommentView]:
    """One statement, whatever the number of comments."""
    rows = await _COMMENTS_OF_ARTICLE.all(db, article_id=article.id, viewer_id=viewer_id)
    return [_to_view(row) for row in rows]


async def create_comment(session: AsyncSession, article: ArticleRef, author: AuthUser, body: str) -> CommentView:
    comment = Comment(body=body, article_id=article.id, author_id=author.id)
    session.add(comment)
    await session.flush()
    return CommentView(
        comment.id, comment.created_at, comment.updated_at, body, author.username, author.bio, author.image, False
    )


def parse_comment_id(raw: str) -> int:
    """Comment ids are integers; anything else names no comment (404, not 422)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("comment", "not found")
    return int(raw)


async def delete_comment(session: AsyncSession, article: ArticleRef, raw_id: str, user: AuthUser) -> None:
    """By its author, or by a moderator or admin (users/permissions.py), which the audit log records in this
    transaction."""
    comment_id = parse_comment_id(raw_id)
    author_id = await session.scalar(
        select(Comment.author_id).where(Comment.id == comment_id, Comment.article_id == article.id)
    )
    if author_id is None:  # unknown, or a comment of another article
        raise NotFound("comment", "not found")
    if not can_on(user, author_id, own=Action.DELETE_OWN_COMMENT, other=Action.DELETE_ANY_COMMENT):
        raise Forbidden("comment", "forbidden")
    if not await changed_rows(session, delete(Comment).where(Comment.id == comment_id)):
        raise NotFound("comment", "not found")  # deleted a moment ago by someone else
    if author_id != user.id:
        audit.record(session, audit.Actor.of(user), "comment.delete", f"comment:{comment_id}")
