from datetime import datetime

from sqlalchemy import ForeignKey, Identity, Index, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.core.db import Base, BigId, same_as_created, utcnow
from service.users.models import User


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (
        Index("ix_comments_article_id_created_at_id", "article_id", "created_at", "id"),
        {"sqlite_autoincrement": True},  # a deleted comment's id is never handed out again
    )

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    article_id: Mapped[int] = mapped_column(BigId, ForeignKey("articles.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=same_as_created)

    author: Mapped[User] = relationship(lazy="raise")
