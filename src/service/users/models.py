from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, Identity, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, same_as_created, utcnow


class Role(StrEnum):
    USER = "user"
    MODERATOR = "moderator"
    ADMIN = "admin"


class UserStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - ids never reused after a delete, as on PostgreSQL

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    bio: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(2000))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", values_callable=_values, validate_strings=True), default=Role.USER
    )
    status: Mapped[UserStatus] = mapped_column(
        Enum(UserStatus, name="user_status", values_callable=_values, validate_strings=True),
        default=UserStatus.ACTIVE,
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=same_as_created)
    # Counters kept by articles/counters.py: articles this user wrote, and articles this user has favorited.
    articles_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    favorited_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


# Unique case-insensitively: "Jake" and "jake" are one account name, as are e-mails differing only in case.
Index("uq_users_username_lower", func.lower(User.username), unique=True)
Index("uq_users_email_lower", func.lower(User.email), unique=True)
Index("ix_users_created_at_id", User.created_at, User.id)  # the admin API lists users newest first
