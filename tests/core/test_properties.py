"""Property-based tests (Hypothesis) of the error mapper (``core/errors.py``): whatever Pydantic reports, the client
reads ``{field: [message, ...]}`` with at least one non-empty message per field, and the mapper never raises."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from service.admin.schemas import AdminUserUpdateEnvelope
from service.articles.schemas import ArticleCreateEnvelope, ArticleUpdateEnvelope
from service.comments.schemas import CommentCreateEnvelope
from service.core.errors import BLANK, message_for, validation_errors
from service.users.schemas import RefreshRequest, UserCreateEnvelope, UserLoginEnvelope, UserUpdateEnvelope

FAST = settings(max_examples=200, deadline=None)  # deadline=None: no timing flakiness on a busy CI machine

# Pydantic's error types the mapper names, ours, and others it must survive (anything else reads "is invalid").
TYPES = [
    "missing",
    "blank",
    "invalid",
    "message",
    "none_required",
    "json_invalid",
    "model_attributes_type",
    "dict_type",
    "model_type",
    "string_too_short",
    "string_too_long",
    "too_long",
    "too_short",
    "less_than_equal",
    "greater_than_equal",
    "less_than",
    "greater_than",
    "int_parsing",
    "string_type",
    "list_type",
    "enum",
    "value_error",
    "string_pattern_mismatch",
]
CTX_KEYS = ["min_length", "max_length", "le", "ge", "lt", "gt", "max", "expected", "pattern", "error"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
locations = st.lists(
    st.one_of(
        st.sampled_from(["body", "query", "path", "header", "cookie", "user", "article", "comment", "tagList"]),
        st.text(min_size=1, max_size=8),
        st.integers(min_value=0, max_value=30),
    ),
    max_size=5,
).map(tuple)
# The shape of pydantic_core's ErrorDetails: type, loc and a non-empty msg always; ctx and input sometimes.
errors = st.fixed_dictionaries(
    {
        "type": st.one_of(st.sampled_from(TYPES), st.text(max_size=12)),
        "loc": locations,
        "msg": st.text(min_size=1, max_size=20),
    },
    optional={
        "ctx": st.dictionaries(st.one_of(st.sampled_from(CTX_KEYS), st.text(min_size=1, max_size=6)), scalars),
        "input": st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
    },
)
envelopes = st.one_of(st.none(), st.sampled_from(["user", "article", "comment", "refreshToken"]))


def assert_client_shape(result: Any) -> None:
    assert isinstance(result, dict)
    for field, messages in result.items():
        assert isinstance(field, str)
        assert field
        assert isinstance(messages, list)
        assert messages
        assert all(isinstance(message, str) and message for message in messages)
        assert len(set(messages)) == len(messages)  # each message once
        if BLANK in messages:
            assert messages == [BLANK]  # blank first: no other message beside it


@FAST
@given(st.lists(errors, max_size=8), envelopes)
def test_any_pydantic_like_errors_map_to_fields_with_messages(raw: list[dict[str, Any]], envelope: str | None) -> None:
    result = validation_errors(raw, envelope)
    assert_client_shape(result)
    if all(error["type"] == "none_required" for error in raw):
        assert result == {}
    else:
        assert result


@FAST
@given(errors)
def test_message_for_is_never_empty_and_never_raises(error: dict[str, Any]) -> None:
    message = message_for(error)
    assert isinstance(message, str)
    assert message


# Real Pydantic errors from every request body, as FastAPI reports them (under "body").
MODELS: list[tuple[type[BaseModel], str]] = [
    (UserCreateEnvelope, "user"),
    (UserLoginEnvelope, "user"),
    (UserUpdateEnvelope, "user"),
    (ArticleCreateEnvelope, "article"),
    (ArticleUpdateEnvelope, "article"),
    (CommentCreateEnvelope, "comment"),
    (AdminUserUpdateEnvelope, "user"),
    (RefreshRequest, "refreshToken"),
]
FIELDS = ["username", "email", "password", "bio", "image", "title", "description", "body", "tagList", "role", "status"]
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
inner_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)


def _bodies(envelope: str) -> st.SearchStrategy[Any]:
    return st.one_of(json_values, st.fixed_dictionaries({envelope: st.one_of(inner_objects, json_values)}))


def _fastapi_errors(model: type[BaseModel], body: Any) -> list[dict[str, Any]] | None:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
    return None


def _aliases(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _aliases(annotation)
    return names


@FAST
@given(st.sampled_from(MODELS).flatmap(lambda pair: st.tuples(st.just(pair), _bodies(pair[1]))))
def test_real_validation_errors_name_fields_of_the_body(case: tuple[tuple[type[BaseModel], str], Any]) -> None:
    (model, envelope), body = case
    raw = _fastapi_errors(model, body)
    if raw is None:
        return  # a valid body
    result = validation_errors(raw, envelope)
    assert_client_shape(result)
    assert result, raw
    assert set(result) <= _aliases(model) | {envelope}, (result, raw)


@FAST
@given(
    st.sampled_from(["title", "description", "body"]),
    st.sampled_from([None, "", " ", "\t\n  "]),
    st.dictionaries(st.sampled_from(["title", "description", "body", "tagList"]), json_values, max_size=4),
)
def test_a_blank_article_field_reads_cant_be_blank_and_nothing_else(field: str, blank: Any, rest: Any) -> None:
    raw = _fastapi_errors(ArticleCreateEnvelope, {"article": {**rest, field: blank}})
    assert raw is not None
    assert validation_errors(raw, "article")[field] == [BLANK]
