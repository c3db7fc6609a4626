from typing import Annotated

from fastapi import Depends

from service.articles import service as articles_service
from service.articles.models import Article
from service.articles.service import ArticleRef
from service.core.db import ReadsDep, SessionDep
from service.core.errors import NotFound


async def require_article(slug: str, session: SessionDep) -> Article:
    """The ORM article, for the route that edits it."""
    article = await articles_service.get_by_slug(session, slug)
    if article is None:
        raise NotFound("article", "not found")
    return article


async def require_article_ref(slug: str, db: ReadsDep) -> ArticleRef:
    """Which article the path names (id and author): what every other route needs, read as one plain row."""
    article = await articles_service.get_ref(db, slug)
    if article is None:
        raise NotFound("article", "not found")
    return article


# Declare after CurrentUser in a route's parameters: authentication is checked before the slug is looked up.
ArticleDep = Annotated[Article, Depends(require_article)]
ArticleRefDep = Annotated[ArticleRef, Depends(require_article_ref)]
