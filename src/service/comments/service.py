"""Comments on articles: a conversation read top to bottom."""

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from service.articles.models import Article
from service.comments.models import Comment
from service.core.errors import Forbidden, NotFound
from service.profiles.service import following_expr
from service.users.models import STAFF_ROLES, User


async def list_comments(session: AsyncSession, article: Article, viewer_id: int | None) -> list[tuple[Comment, bool]]:
    """Oldest first, ties by id; each with whether the viewer follows its author. One statement."""
    stmt = (
        select(Comment, following_expr(viewer_id, Comment.author_id))
        .join(Comment.author)
        .options(contains_eager(Comment.author))
        .where(Comment.article_id == article.id)
        .order_by(Comment.created_at, Comment.id)
    )
    return [(comment, bool(following)) for comment, following in (await session.execute(stmt)).all()]


async def create_comment(session: AsyncSession, article: Article, author: User, body: str) -> Comment:
    comment = Comment(body=body, article_id=article.id, author_id=author.id)
    session.add(comment)
    await session.flush()
    set_committed_value(comment, "author", author)
    return comment


def parse_comment_id(raw: str) -> int:
    """Comment ids are integers; anything else names no comment (404, not 422)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("comment", "not found")
    return int(raw)


async def delete_comment(session: AsyncSession, article: Article, raw_id: str, user: User) -> None:
    comment_id = parse_comment_id(raw_id)
    author_id = await session.scalar(
        select(Comment.author_id).where(Comment.id == comment_id, Comment.article_id == article.id)
    )
    if author_id is None:  # unknown, or a comment of another article
        raise NotFound("comment", "not found")
    if author_id != user.id and user.role not in STAFF_ROLES:
        raise Forbidden("comment", "forbidden")
    await session.execute(delete(Comment).where(Comment.id == comment_id))
