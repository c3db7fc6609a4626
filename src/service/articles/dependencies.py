from typing import Annotated

from fastapi import Depends

from service.articles import service as articles_service
from service.articles.models import Article
from service.core.db import SessionDep
from service.core.errors import NotFound


async def require_article(slug: str, session: SessionDep) -> Article:
    article = await articles_service.get_by_slug(session, slug)
    if article is None:
        raise NotFound("article", "not found")
    return article


# Declare after CurrentUser in a route's parameters: authentication is checked before the slug is looked up.
ArticleDep = Annotated[Article, Depends(require_article)]
