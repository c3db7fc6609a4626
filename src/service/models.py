"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, tests)."""

from service.articles.models import Article, Counter, Favorite, Tag, article_tags
from service.audit.models import AuditEntry
from service.comments.models import Comment
from service.core.db import Base
from service.outbox.models import OutboxEvent
from service.profiles.models import Follow
from service.sessions.models import SpentRefreshToken, UserSession
from service.users.models import EmailToken, User

__all__ = [
    "Article",
    "AuditEntry",
    "Base",
    "Comment",
    "Counter",
    "EmailToken",
    "Favorite",
    "Follow",
    "OutboxEvent",
    "SpentRefreshToken",
    "Tag",
    "User",
    "UserSession",
    "article_tags",
]
