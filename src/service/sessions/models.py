from datetime import datetime

from sqlalchemy import ForeignKey, Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId


class UserSession(Base):
    """One login (or registration) on one device: what an access token and a refresh token belong to (B5).

    A token is valid while its session row is neither revoked nor expired: revocation is a row update, seen by every
    instance on the very next request. Only a hash of the current refresh token is stored (a leaked table grants
    nothing); the tokens it replaced are kept in ``spent_refresh_tokens`` to recognise their reuse.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_id", "user_id"),  # a user's sessions: listing, logout everywhere
        # An id is never reused after a prune, so an old access token can never name a new session.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    refresh_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 (hex) of the current refresh token
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]  # the last login, refresh, or authenticated request (to within a few minutes)
    expires_at: Mapped[datetime]  # moved forward by every refresh: an idle session ends
    revoked_at: Mapped[datetime | None]
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(45))


class SpentRefreshToken(Base):
    """A refresh token already exchanged: presenting it again is a reuse (a stolen token), unless it is the other
    tab of a race within the grace period."""

    __tablename__ = "spent_refresh_tokens"
    __table_args__ = (Index("ix_spent_refresh_tokens_session_id", "session_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(BigId, ForeignKey("sessions.id", ondelete="CASCADE"))
    spent_at: Mapped[datetime]
