"""Imports every domain's models so ``Base.metadata`` is complete (Alembic, tests)."""

from service.core.db import Base
from service.users.models import User

__all__ = ["Base", "User"]
