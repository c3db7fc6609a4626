from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Identity, Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.core.db import Base, BigId, UTCDateTime, same_as_created, utcnow
from service.users.models import User

article_tags = Table(
    "article_tags",
    Base.metadata,
    Column("article_id", BigId, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", BigId, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    # The article's own created_at, copied (it never changes): a page of one tag is then a walk of one index, in
    # the listing's order, however many articles carry the tag.
    Column("article_created_at", UTCDateTime(), nullable=False),
    Index("ix_article_tags_tag_id_article_created_at_article_id", "tag_id", "article_created_at", "article_id"),
)


class Favorite(Base):
    __tablename__ = "favorites"
    __table_args__ = (Index("ix_favorites_article_id", "article_id"),)  # favoritesCount of an article

    # (user_id, article_id) also serves "articles favorited by X"
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    article_id: Mapped[int] = mapped_column(BigId, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Counter(Base):
    """Totals that no row of their own carries; today one, ``articles``: how many articles exist."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - ids never reused after a delete

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    articles_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # articles/counters.py


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (
        Index("ix_articles_created_at_id", "created_at", "id"),  # newest first, creation-order tie-break
        Index("ix_articles_author_id_created_at_id", "author_id", "created_at", "id"),  # by author; the feed
        {"sqlite_autoincrement": True},  # ids never reused after a delete: they order articles by creation
    )

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(String(300), unique=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=same_as_created)
    favorites_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # articles/counters.py

    author: Mapped[User] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(secondary=article_tags, lazy="raise", order_by=Tag.name)
