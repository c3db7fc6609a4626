"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, tests)."""

from service.articles.models import Article, Counter, Favorite, Tag, article_tags
from service.comments.models import Comment
from service.core.db import Base
from service.profiles.models import Follow
from service.users.models import User

__all__ = ["Article", "Base", "Comment", "Counter", "Favorite", "Follow", "Tag", "User", "article_tags"]
