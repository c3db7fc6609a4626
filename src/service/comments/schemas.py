from typing import Annotated

from pydantic import BeforeValidator, Field

from service.core.schemas import CamelModel, RequestModel, Timestamp, reject_blank
from service.profiles.schemas import ProfileRead


class CommentCreate(RequestModel):
    body: Annotated[
        str, Field(min_length=1, max_length=10_000, examples=["Thank you so much!"]), BeforeValidator(reject_blank)
    ]


class CommentCreateEnvelope(RequestModel):
    comment: CommentCreate


class CommentRead(CamelModel):
    id: int
    created_at: Timestamp
    updated_at: Timestamp
    body: str
    author: ProfileRead


class CommentEnvelope(CamelModel):
    comment: CommentRead


class CommentList(CamelModel):
    comments: list[CommentRead]
