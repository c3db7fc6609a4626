from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, Identity, Index, String, Text, false, func
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
    # B7: set by following the link mailed to ``email``; an e-mail change sets it back to false.
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=same_as_created)
    # Counters kept by articles/counters.py: articles this user wrote, and articles this user has favorited.
    articles_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    favorited_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


# Unique case-insensitively: "Jake" and "jake" are one account name, as are e-mails differing only in case.
Index("uq_users_username_lower", func.lower(User.username), unique=True)
Index("uq_users_email_lower", func.lower(User.email), unique=True)
Index("ix_users_created_at_id", User.created_at, User.id)  # the admin API lists users newest first


class TokenPurpose(StrEnum):
    VERIFY = "verify"
    RESET = "reset"


class EmailToken(Base):
    """A link token mailed for B7 (verify an address, reset a password): single-use, expiring, stored as a hash.

    ``email`` is the address it was sent to: a token proves control of that address only, so once the account's
    address has changed the token no longer applies.
    """

    __tablename__ = "email_tokens"
    __table_args__ = (Index("ix_email_tokens_user_id", "user_id"),)  # a user's outstanding tokens

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    # Nullable for the equal work of a reset asked for an unknown address: that row is written and rolled back.
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[TokenPurpose] = mapped_column(
        Enum(TokenPurpose, name="email_token_purpose", values_callable=_values, validate_strings=True)
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 (hex) of the token; never the token
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
