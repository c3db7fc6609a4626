"""Slugs: the pure ``slugify`` rules, and unique slugs over HTTP (duplicates, races, reserved paths)."""

import asyncio
import re

import pytest
from httpx import AsyncClient

from service.articles import service as articles_service
from service.articles.slugs import MAX_BASE_LENGTH, slugify, with_suffix
from tests.helpers import article_payload, auth, create_article, register

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("How to train your dragon", "how-to-train-your-dragon"),
        ("Crème brûlée", "creme-brulee"),
        ("Crème brûlée: 10 ways!", "creme-brulee-10-ways"),
        ("Ærøskøbing", "aeroskobing"),
        ("Straße", "strasse"),
        ("Привет, мир", "privet-mir"),
        ("  Hello   World -- 2024!  ", "hello-world-2024"),
        ("C'est l'été", "c-est-l-ete"),
        ("snake_case and CamelCase", "snake-case-and-camelcase"),
        ("!!! ??? ...", "article"),
        ("", "article"),
        ("   ", "article"),
        ("---", "article"),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


@pytest.mark.parametrize("title", ["北京欢迎你", "東京タワー", "서울", "Ελληνικά", "مرحبا", "שלום", "🐉 dragons 🔥"])
def test_slugify_transliterates_any_script_to_ascii(title: str) -> None:
    slug = slugify(title)
    assert SLUG.match(slug), slug
    assert slug != "article"


def test_slugify_transliterates_cjk_readably() -> None:
    assert slugify("北京") == "beijing"


@pytest.mark.parametrize(
    "title",
    [
        "word " * 100,
        "a" * 300,
        "ab-" * 120,
        "x" * 199 + " yz",
        "x" * 200 + " yz",
        "x" * 201 + " yz",
        "é" * 250,
        "龍" * 250,
    ],
)
def test_slugify_trims_long_titles(title: str) -> None:
    slug = slugify(title)
    assert 0 < len(slug) <= MAX_BASE_LENGTH
    assert SLUG.match(slug), slug


def test_slugify_trims_at_a_word_boundary() -> None:
    slug = slugify("word " * 100)
    assert slug == "-".join(["word"] * 40)
    assert slugify("a" * 300) == "a" * MAX_BASE_LENGTH


def test_with_suffix_is_a_distinct_valid_slug() -> None:
    suffixed = {with_suffix("same-title") for _ in range(50)}
    assert len(suffixed) == 50
    for slug in suffixed:
        assert re.fullmatch(r"same-title-[0-9a-f]{8}", slug)


# ---------------------------------------------------------------------------------------------------------------
# Over HTTP


async def test_created_slug_is_ascii_and_duplicates_are_distinct(client: AsyncClient) -> None:
    alice = await register(client)
    first = await create_article(client, alice["token"], title="Crème brûlée")
    second = await create_article(client, alice["token"], title="Crème brûlée")
    assert first["slug"] == "creme-brulee"
    assert second["slug"] != first["slug"]
    assert second["slug"].startswith("creme-brulee-")
    assert SLUG.match(second["slug"])


async def test_punctuation_only_titles_get_the_fallback_slug(client: AsyncClient) -> None:
    alice = await register(client)
    first = await create_article(client, alice["token"], title="?!")
    second = await create_article(client, alice["token"], title="...")
    assert first["slug"] == "article"
    assert second["slug"].startswith("article-")
    for article in (first, second):
        assert (await client.get(f"/articles/{article['slug']}")).json()["article"]["title"] == article["title"]


async def test_long_title_slug_is_trimmed(client: AsyncClient) -> None:
    alice = await register(client)
    article = await create_article(client, alice["token"], title="Dragon " * 36)
    assert len(article["slug"]) <= MAX_BASE_LENGTH
    assert SLUG.match(article["slug"])
    assert (await client.get(f"/articles/{article['slug']}")).status_code == 200


async def test_reserved_slug_feed_is_never_given(client: AsyncClient) -> None:
    alice = await register(client)
    article = await create_article(client, alice["token"], title="Feed")
    assert article["slug"].startswith("feed-")
    assert SLUG.match(article["slug"])


async def test_slug_exhaustion_is_a_clean_500(client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await register(client)
    await create_article(client, alice["token"], title="Crowded")
    monkeypatch.setattr(articles_service, "with_suffix", lambda base: base)  # every candidate is taken
    response = await client.post(
        "/articles", json={"article": article_payload(title="Crowded")}, headers=auth(alice["token"])
    )
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}
    assert (await client.get("/articles", params={"author": alice["username"]})).json()["articlesCount"] == 1


async def test_concurrent_same_title_creations_get_distinct_slugs(committing_client: AsyncClient) -> None:
    client = committing_client
    alice = await register(client)
    responses = await asyncio.gather(
        *(
            client.post(
                "/articles",
                json={"article": article_payload(title="Race", tagList=["race", f"own{i}"])},
                headers=auth(alice["token"]),
            )
            for i in range(10)
        )
    )
    assert [r.status_code for r in responses] == [201] * 10
    slugs = {r.json()["article"]["slug"] for r in responses}
    assert len(slugs) == 10
    assert "race" in slugs
    assert all(SLUG.match(slug) and slug.startswith("race") for slug in slugs)
    listed = (await client.get("/articles", params={"limit": 100})).json()
    assert listed["articlesCount"] == 10
    assert {a["slug"] for a in listed["articles"]} == slugs
    tags = (await client.get("/tags")).json()["tags"]
    assert tags[0] == "race"
    assert sorted(tags[1:]) == sorted(f"own{i}" for i in range(10))


async def test_concurrent_retitles_to_the_same_title_get_distinct_slugs(committing_client: AsyncClient) -> None:
    client = committing_client
    alice = await register(client)
    created = [await create_article(client, alice["token"]) for _ in range(6)]
    responses = await asyncio.gather(
        *(
            client.put(f"/articles/{a['slug']}", json={"article": {"title": "Same"}}, headers=auth(alice["token"]))
            for a in created
        )
    )
    assert [r.status_code for r in responses] == [200] * 6
    slugs = {r.json()["article"]["slug"] for r in responses}
    assert len(slugs) == 6
    assert "same" in slugs
    for response in responses:
        article = response.json()["article"]
        assert (await client.get(f"/articles/{article['slug']}")).json()["article"]["title"] == "Same"
