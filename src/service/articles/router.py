from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.articles import service as articles_service
from service.articles.dependencies import ArticleDep, ArticleRefDep
from service.articles.schemas import (
    ArticleCreateEnvelope,
    ArticleEnvelope,
    ArticleList,
    ArticleListItem,
    ArticleRead,
    ArticleUpdateEnvelope,
    TagsRead,
)
from service.articles.service import ArticleView
from service.core.db import ReadDep, SessionDep
from service.core.errors import error_responses
from service.core.paging import Limit, Offset
from service.core.schemas import timestamp
from service.profiles.schemas import ProfileRead
from service.users.dependencies import OPTIONAL_AUTH, CurrentUser, OptionalUser

router = APIRouter(prefix="/api", tags=["articles"])


def _author(view: ArticleView) -> ProfileRead:
    author = view.author
    return ProfileRead(username=author.username, bio=author.bio, image=author.image, following=author.following)


def to_item(view: ArticleView) -> ArticleListItem:
    return ArticleListItem(
        slug=view.slug,
        title=view.title,
        description=view.description,
        tag_list=view.tags,
        created_at=timestamp(view.created_at),
        updated_at=timestamp(view.updated_at),
        favorited=view.favorited,
        favorites_count=view.favorites_count,
        author=_author(view),
    )


def to_read(view: ArticleView) -> ArticleEnvelope:
    return ArticleEnvelope(
        article=ArticleRead(
            slug=view.slug,
            title=view.title,
            description=view.description,
            body=view.body,
            tag_list=view.tags,
            created_at=timestamp(view.created_at),
            updated_at=timestamp(view.updated_at),
            favorited=view.favorited,
            favorites_count=view.favorites_count,
            author=_author(view),
        )
    )


@router.get("/articles", summary="List articles", responses=error_responses(401, 422), openapi_extra=OPTIONAL_AUTH)
async def list_articles(
    db: ReadDep,
    viewer: OptionalUser,
    # No length limits on filters: a value no tag or user could have is unknown, and unknown means 200 and [] (A7).
    tag: Annotated[str | None, Query(description="Only articles with this tag.")] = None,
    author: Annotated[str | None, Query(description="Only articles by this username.")] = None,
    favorited: Annotated[str | None, Query(description="Only articles this user favorited.")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ArticleList:
    views, total = await articles_service.list_articles(
        db,
        viewer.id if viewer else None,
        tag=tag,
        author=author,
        favorited=favorited,
        limit=limit,
        offset=offset,
    )
    return ArticleList(articles=[to_item(v) for v in views], articles_count=total)


@router.get("/articles/feed", summary="Articles by followed authors", responses=error_responses(401, 422))
async def feed(db: ReadDep, viewer: CurrentUser, limit: Limit = 20, offset: Offset = 0) -> ArticleList:
    views, total = await articles_service.feed(db, viewer.id, limit=limit, offset=offset)
    return ArticleList(articles=[to_item(v) for v in views], articles_count=total)


@router.post(
    "/articles",
    status_code=status.HTTP_201_CREATED,
    summary="Create an article",
    responses=error_responses(401, 413, 422),
)
async def create_article(body: ArticleCreateEnvelope, session: SessionDep, viewer: CurrentUser) -> ArticleEnvelope:
    data = body.article
    view = await articles_service.create_article(
        session, viewer, title=data.title, description=data.description, body=data.body, tags=data.tag_list
    )
    return to_read(view)


@router.get(
    "/articles/{slug}", summary="Get an article", responses=error_responses(401, 404), openapi_extra=OPTIONAL_AUTH
)
async def get_article(slug: str, db: ReadDep, viewer: OptionalUser) -> ArticleEnvelope:
    return to_read(await articles_service.get_view(db, slug, viewer.id if viewer else None))


@router.put(
    "/articles/{slug}", summary="Update an article (author only)", responses=error_responses(401, 403, 404, 413, 422)
)
async def update_article(
    body: ArticleUpdateEnvelope, viewer: CurrentUser, article: ArticleDep, session: SessionDep
) -> ArticleEnvelope:
    articles_service.ensure_can_edit(article, viewer)
    await articles_service.update_article(session, article, body.article.model_dump(exclude_unset=True, by_alias=False))
    return to_read(await articles_service.get_view(session, article.slug, viewer.id))


@router.delete(
    "/articles/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an article (its author, a moderator or an admin)",
    responses=error_responses(401, 403, 404),
)
async def delete_article(slug: str, viewer: CurrentUser, article: ArticleRefDep, session: SessionDep) -> Response:
    await articles_service.delete_article_as(session, article, slug, viewer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/articles/{slug}/favorite", summary="Favorite an article", responses=error_responses(401, 404))
async def favorite(slug: str, viewer: CurrentUser, article: ArticleRefDep, session: SessionDep) -> ArticleEnvelope:
    await articles_service.favorite(session, viewer.id, article)
    return to_read(await articles_service.get_view(session, slug, viewer.id))


@router.delete("/articles/{slug}/favorite", summary="Unfavorite an article", responses=error_responses(401, 404))
async def unfavorite(slug: str, viewer: CurrentUser, article: ArticleRefDep, session: SessionDep) -> ArticleEnvelope:
    await articles_service.unfavorite(session, viewer.id, article)
    return to_read(await articles_service.get_view(session, slug, viewer.id))


@router.get("/tags", summary="Tags in use, most used first", tags=["tags"])
async def list_tags(db: ReadDep) -> TagsRead:
    return TagsRead(tags=await articles_service.list_tags(db))
