from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from service.core.schemas import CamelModel, PartialUpdate, RequestModel, Timestamp, reject_blank
from service.profiles.schemas import ProfileRead

MAX_TAGS = 20
TAG_MAX_LENGTH = 64


def _clean_tags(value: Any) -> Any:
    """Trim tags, drop empty ones, collapse duplicates; non-strings are left for the type check to reject."""
    if not isinstance(value, list):
        return value
    seen: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str):
            return value
        tag = item.strip()
        if tag:
            seen.setdefault(tag, None)
    tags = list(seen)
    if len(tags) > MAX_TAGS:
        raise PydanticCustomError("message", "is too long (maximum is {max} tags)", {"max": MAX_TAGS})
    return tags


Title = Annotated[
    str, Field(min_length=1, max_length=255, examples=["How to train your dragon"]), BeforeValidator(reject_blank)
]
Description = Annotated[
    str, Field(min_length=1, max_length=1000, examples=["Ever wonder how?"]), BeforeValidator(reject_blank)
]
Body = Annotated[
    str, Field(min_length=1, max_length=100_000, examples=["You have to believe"]), BeforeValidator(reject_blank)
]
TagList = Annotated[
    list[Annotated[str, Field(max_length=TAG_MAX_LENGTH)]],
    BeforeValidator(_clean_tags),
    Field(max_length=MAX_TAGS, examples=[["dragons", "training"]]),
]


def _reject_null(value: Any) -> Any:
    if value is None:  # on update, null is ambiguous (clear? keep?): say so instead of guessing
        raise PydanticCustomError("invalid", "is invalid")
    return value


class ArticleCreate(RequestModel):
    """``tagList`` is optional: absent means no tags; ``null`` is refused (422 ``is invalid``), as on update."""

    title: Title
    description: Description
    body: Body
    tag_list: TagList = Field(default_factory=list)


class ArticleUpdate(PartialUpdate):
    """Any subset; ``tagList`` absent keeps the tags, ``[]`` clears them, ``null`` is refused.

    Unset fields are None internally; an explicit null is refused, so the schema does not offer it.
    """

    title: Annotated[Title | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    description: Annotated[Description | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    body: Annotated[Body | SkipJsonSchema[None], BeforeValidator(reject_blank)] = None
    tag_list: Annotated[TagList | SkipJsonSchema[None], BeforeValidator(_reject_null)] = None


class ArticleCreateEnvelope(RequestModel):
    article: ArticleCreate


class ArticleUpdateEnvelope(RequestModel):
    article: ArticleUpdate


class ArticleListItem(CamelModel):
    slug: str
    title: str
    description: str
    tag_list: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool
    favorites_count: int
    author: ProfileRead


class ArticleRead(ArticleListItem):
    body: str


class ArticleEnvelope(CamelModel):
    article: ArticleRead


class ArticleList(CamelModel):
    articles: list[ArticleListItem]
    articles_count: int


class TagsRead(CamelModel):
    tags: list[str]
