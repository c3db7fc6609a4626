from fastapi import APIRouter, Response, status

from service.articles.dependencies import ArticleRefDep
from service.comments import service as comments_service
from service.comments.schemas import CommentCreateEnvelope, CommentEnvelope, CommentList, CommentRead
from service.comments.service import CommentView
from service.core.db import ReadDep, SessionDep
from service.core.errors import error_responses
from service.core.schemas import timestamp
from service.profiles.schemas import ProfileRead
from service.users.dependencies import OPTIONAL_AUTH, CurrentUser, OptionalUser

router = APIRouter(prefix="/api/articles/{slug}/comments", tags=["comments"])


def to_read(comment: CommentView) -> CommentRead:
    return CommentRead(
        id=comment.id,
        created_at=timestamp(comment.created_at),
        updated_at=timestamp(comment.updated_at),
        body=comment.body,
        author=ProfileRead(
            username=comment.username, bio=comment.bio, image=comment.image, following=comment.following
        ),
    )


@router.get(
    "", summary="Comments of an article, oldest first", responses=error_responses(401, 404), openapi_extra=OPTIONAL_AUTH
)
async def list_comments(viewer: OptionalUser, article: ArticleRefDep, db: ReadDep) -> CommentList:
    comments = await comments_service.list_comments(db, article, viewer.id if viewer else None)
    return CommentList(comments=[to_read(comment) for comment in comments])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Comment on an article",
    responses=error_responses(401, 404, 413, 422),
)
async def create_comment(
    body: CommentCreateEnvelope, viewer: CurrentUser, article: ArticleRefDep, session: SessionDep
) -> CommentEnvelope:
    comment = await comments_service.create_comment(session, article, viewer, body.comment.body)
    return CommentEnvelope(comment=to_read(comment))


@router.delete(
    "/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a comment (its author, a moderator or an admin)",
    responses=error_responses(401, 403, 404),
)
async def delete_comment(comment_id: str, viewer: CurrentUser, article: ArticleRefDep, session: SessionDep) -> Response:
    await comments_service.delete_comment(session, article, comment_id, viewer)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
