"""Property-based tests (Hypothesis) of the pure article rules: slugs and tag normalisation (B2, A7)."""

import re
import string
from typing import Any
from urllib.parse import quote

import pytest
from anyascii import anyascii
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.articles.schemas import MAX_TAGS, TAG_MAX_LENGTH, ArticleCreate, ArticleUpdate
from service.articles.slugs import MAX_BASE_LENGTH, slugify, with_suffix

SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
FAST = settings(max_examples=200, deadline=None)  # deadline=None: no timing flakiness on a busy CI machine

# Titles as people write them: any script, emoji, punctuation, runs of spaces; and long ones past the cut.
titles = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from("aZ9 -_.!é龍ß\u00a0\t"), max_size=400),
    st.lists(st.text(alphabet="abc", min_size=1, max_size=30), max_size=30).map(" ".join),
)


def _runs(title: str) -> list[str]:
    """The title's letters and digits once folded to lower-case ASCII, as words."""
    return re.findall(r"[a-z0-9]+", anyascii(title).lower())


@FAST
@given(titles)
def test_slug_is_url_safe_ascii_and_stable(title: str) -> None:
    slug = slugify(title)
    assert SLUG.fullmatch(slug), slug  # ASCII lower-case words joined by single hyphens: never empty
    assert quote(slug, safe="") == slug  # nothing to escape in a URL path segment
    assert len(slug) <= MAX_BASE_LENGTH
    assert slugify(title) == slug  # the same title, the same slug


@FAST
@given(titles)
def test_slug_is_the_titles_words_cut_at_a_word_boundary_or_the_fallback(title: str) -> None:
    slug = slugify(title)
    words = _runs(title)
    if not words:  # nothing to spell a slug with: the fallback
        assert slug == "article"
        return
    full = "-".join(words)
    assert full.startswith(slug)
    if len(full) <= MAX_BASE_LENGTH:
        assert slug == full
    elif len(words[0]) >= MAX_BASE_LENGTH:  # one word longer than the limit: cut inside it
        assert slug == full[:MAX_BASE_LENGTH]
    else:
        assert full[len(slug)] == "-"  # a whole number of words


@FAST
@given(st.text(alphabet=string.printable, max_size=300))
def test_slug_ignores_case_punctuation_and_surrounding_space(title: str) -> None:
    assert slugify(title.upper()) == slugify(title.lower()) == slugify(f" \t{title}!? ") == slugify(title)


@FAST
@given(st.from_regex(SLUG, fullmatch=True))
def test_duplicate_suffix_keeps_a_valid_slug(base: str) -> None:
    slug = with_suffix(base)
    assert SLUG.fullmatch(slug)
    assert re.fullmatch(rf"{re.escape(base)}-[0-9a-f]{{8}}", slug)


# ---------------------------------------------------------------------------------------------------------------
# Tags: trimmed, empties dropped, duplicates collapsed, first occurrences in the order given (the response then
# sorts them by name, A7); more than MAX_TAGS distinct ones, or one longer than TAG_MAX_LENGTH, is refused.

tag = st.one_of(
    st.text(alphabet=st.sampled_from(" \t\nabAB1-é"), max_size=6),  # few letters: duplicates are frequent
    st.text(max_size=8).filter(lambda t: "\x00" not in t),  # NUL is refused as unstorable, tested elsewhere
    st.text(alphabet="ab ", min_size=TAG_MAX_LENGTH - 2, max_size=TAG_MAX_LENGTH + 3),  # around the length limit
)
tag_lists = st.lists(tag, max_size=MAX_TAGS + 6)


def _normalised(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in tags if t.strip()))


def _article(tags: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", "body": "b", "tagList": tags}


@FAST
@given(tag_lists)
def test_tags_are_trimmed_deduplicated_and_keep_first_occurrence_order(tags: list[str]) -> None:
    expected = _normalised(tags)
    valid = len(expected) <= MAX_TAGS and all(len(t) <= TAG_MAX_LENGTH for t in expected)
    for model, data in ((ArticleCreate, _article(tags)), (ArticleUpdate, {"tagList": tags})):
        if not valid:
            with pytest.raises(ValidationError) as exc:
                model.model_validate(data)
            assert {error["loc"][0] for error in exc.value.errors()} == {"tagList"}
            continue
        result = model.model_validate(data).tag_list
        assert result == expected
        assert all(t and t == t.strip() for t in result)
        assert len(set(result)) == len(result)
        assert model.model_validate({**data, "tagList": result}).tag_list == result  # idempotent


@FAST
@given(st.lists(st.text(alphabet="xyz", min_size=1, max_size=3), min_size=MAX_TAGS + 1, max_size=40))
def test_more_than_the_maximum_distinct_tags_is_refused_but_duplicates_do_not_count(tags: list[str]) -> None:
    distinct = len(set(tags))
    if distinct > MAX_TAGS:
        with pytest.raises(ValidationError):
            ArticleCreate.model_validate(_article(tags))
    else:
        assert ArticleCreate.model_validate(_article(tags)).tag_list == list(dict.fromkeys(tags))


@pytest.mark.parametrize("model", [ArticleCreate, ArticleUpdate])
@FAST
@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.text(), max_size=2)))
def test_a_tag_list_that_is_not_a_list_is_refused_on_create_and_update(model: type[Any], value: Any) -> None:
    """One rule for both (A7): ``null`` included, which create used to take for ``[]``."""
    data = _article(value) if model is ArticleCreate else {"tagList": value}
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    assert {error["loc"][0] for error in exc.value.errors()} == {"tagList"}
