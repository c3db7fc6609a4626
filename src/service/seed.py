"""``service seed``: realistic, reproducible demo data, written in bulk (COPY on PostgreSQL).

Each table's rows come from a generator of tuples; they are cut into batches and handed to one small writer per
dialect (asyncpg's binary ``COPY`` on PostgreSQL, ``executemany`` on SQLite), all in one transaction, so a failed
run leaves nothing behind. Every table draws from its own ``random.Random`` stream derived from the seed, and
timestamps from a fixed base date, so the same seed on the same empty database gives the same rows.

Seeded rows only refer to each other (new users follow new users, favorite and comment on new articles), so a run
on a populated database adds rows without touching existing ones. User and article ids are assigned here, past
both ``max(id)`` and the identity sequence, under a table lock on PostgreSQL; the sequences are moved past them at
the end. Usernames, e-mails and slugs carry the row's id, which makes them unique across runs.

Speed (PostgreSQL): the next batch is generated in a thread while the previous one is being copied, and, when the
role may and no table has triggers of its own, the per-row foreign-key triggers are skipped for the transaction
(``session_replication_role = replica``, as ``pg_restore --disable-triggers`` does); they cost more than the COPY.
"""

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import service.models  # noqa: F401 - registers every table in Base.metadata
from service.articles import counters
from service.articles.models import Article, Tag
from service.articles.slugs import slugify
from service.core.db import Base
from service.core.security import hash_password_sync
from service.users.models import Role, UserStatus

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]

BASE_DATE = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, not now(): the same seed must give the same timestamps
YEAR_US = 365 * 24 * 3600 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


TABLES = ("users", "tags", "articles", "article_tags", "follows", "favorites", "comments")

FIRST_NAMES = _words(
    "ada alan grace linus guido barbara ken dennis margaret edsger donald frances john radia tim hedy katherine "
    "niklaus bjarne anita yukihiro rasmus brendan james sophie ines mei omar priya lars ana kwame sara diego yuki "
    "fatima noah emma liam olivia mateo chloe ivan nina tariq zoe hugo lea felix maya"
)
LAST_NAMES = _words(
    "lovelace turing hopper torvalds rossum liskov thompson ritchie hamilton dijkstra knuth allen mccarthy perlman "
    "lee lamarr johnson wirth stroustrup borg matsumoto lerdorf eich gosling wilson garcia chen haddad patel nilsson "
    "silva mensah cohen rossi tanaka khan muller dubois novak kowalski santos ivanova okafor larsen moreau schmidt "
    "yamamoto fischer ng costa"
)
DOMAINS = ("example.com", "example.org", "example.net")
TECH = _words(
    "Python FastAPI PostgreSQL SQLite Rust Go TypeScript React Vue Svelte Kubernetes Docker Redis GraphQL "
    "WebAssembly Linux Git Django Node.js Elixir Haskell Kafka Terraform Nginx SQLAlchemy asyncio Deno Kotlin "
    "Swift Zig"
)
ADJECTIVES = _words(
    "fast simple robust scalable minimal pragmatic async reliable elegant secure modern lazy immutable typed "
    "distributed resilient boring tiny clean portable"
)
NOUNS = _words(
    "API service query index cache test pipeline deployment schema migration queue worker benchmark endpoint module "
    "container cluster transaction parser compiler dashboard library framework database release log metric monorepo"
)
VERBS = _words(
    "build test debug deploy scale refactor profile design ship monitor secure cache document migrate optimize"
)
GERUNDS = _words(
    "building testing debugging deploying scaling refactoring profiling designing shipping monitoring securing "
    "caching documenting migrating optimizing rewriting reviewing versioning"
)
TAG_WORDS = _words(
    "python javascript typescript rust go postgresql sqlite fastapi django react vue svelte docker kubernetes devops "
    "testing performance security databases webdev backend frontend api async architecture career productivity "
    "opensource linux git cloud aws redis graphql css html machinelearning datascience tutorial beginners "
    "programming design ux mobile android ios kotlin swift elixir haskell functional webassembly observability "
    "monitoring ci microservices serverless terraform nginx caching algorithms math writing books news discuss "
    "showdev refactoring debugging tooling"
)

TITLE_TEMPLATES = (
    "How to {verb} {adj} {nouns} with {tech}",
    "Why we stopped {gerund} our {noun}",
    "{n} {adj} ways to {verb} your {noun}",
    "A {adj} guide to {tech} {nouns}",
    "Lessons learned from {gerund} {nouns} at scale",
    "The {adj} truth about {tech}",
    "{tech} vs {tech2}: {gerund} {adj} {nouns}",
    "Understanding {nouns} in {tech}",
    "What nobody tells you about {adj} {nouns}",
    "Building a {adj} {noun} in {tech}",
    "{gerund} {nouns} with {tech} and {tech2}",
    "Stop {gerund} {nouns} the hard way",
    "{tech} in production: a {adj} {noun} story",
    "Notes on {gerund} a {adj} {noun}",
)
SENTENCE_TEMPLATES = (
    "The {noun} was {adj} until we started {gerund} it with {tech}.",
    "Most teams underestimate how hard it is to {verb} a {adj} {noun}.",
    "With {tech}, {gerund} the {noun} took an afternoon instead of a sprint.",
    "Our first attempt at {gerund} the {noun} failed in production.",
    "A {adj} {noun} beats a clever one every single time.",
    "If you {verb} the {noun} early, the {noun2} stays {adj}.",
    "{tech} and {tech2} both handle this, but in very different ways.",
    "The trick is to keep the {noun} {adj} and the {noun2} {adj2}.",
    "Measure before {gerund} anything: the {noun} is rarely where you think.",
    "We measured a {n}x improvement after {gerund} the {noun}.",
    "Nobody enjoys {gerund} a {noun} at three in the morning.",
    "Here is the {adj} version, in about {n}0 lines of {tech}.",
    "The documentation for {tech} explains {nouns} better than any blog post.",
    "It turned out the {noun} was fine; the {noun2} was the real problem.",
    "Start with a {adj} {noun} and {verb} it only when the numbers say so.",
    "Every {noun} in our stack is now {adj} and {adj2}.",
    "Reviewing {nouns} is where most of the bugs were caught.",
    "The next step is {gerund} the {noun2} with {tech2}.",
)
COMMENT_TEMPLATES = (
    "Great write-up, thanks for sharing!",
    "This matches our experience with {tech}.",
    "Did you try {gerund} the {noun} with {tech2} instead?",
    "How did you {verb} the {noun2} afterwards?",
    "Bookmarked. The part about {nouns} was really useful.",
    "I disagree about {tech}, but the section on {nouns} is spot on.",
    "We hit the same {noun} problem last year.",
)
TAGS_PER_ARTICLE_WEIGHTS = (8, 22, 28, 22, 12, 8)  # 0..5 tags, about 2.2 on average
SENTENCE_POOL = 4096
COMMENT_POOL = 2048


class SeedError(Exception):
    """A seeding run that cannot start or finish (schema missing, a name already taken)."""


@dataclass(frozen=True, slots=True)
class SeedOptions:
    users: int = 100
    articles: int = 1000
    comments_per_article: float = 2.0
    favorites_per_user: float = 10.0
    follows_per_user: float = 5.0
    tags: int = 50
    seed: int = 42
    password: str = "password123"  # noqa: S105 - the documented demo password, printed after seeding
    batch_size: int = 10_000

    def __post_init__(self) -> None:
        for name in ("users", "articles", "tags"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("comments_per_article", "favorites_per_user", "follows_per_user"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be >= 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.articles and not self.users:
            raise ValueError("articles need authors: users must be >= 1")
        if len(self.password) < 8:
            raise ValueError("password must have at least 8 characters (the API refuses shorter ones)")


@dataclass(frozen=True, slots=True)
class SeedReport:
    counts: dict[str, int]  # rows inserted per table, in insertion order
    seconds: dict[str, float]  # time spent generating and writing each table
    elapsed: float  # seconds, ANALYZE included
    password: str
    sample_email: str | None  # one seeded account to log in with
    foreign_keys_checked: bool = True  # False: PostgreSQL replica mode skipped the per-row checks (see below)
    counters_seconds: float = 0.0  # recounting the maintained counters after the load

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rows_per_second(self) -> float:
        return self.total / self.elapsed if self.elapsed > 0 else 0.0


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


class _Words:
    """Fills the ``{slot}``s of a template from the word lists."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def fill(self, template: str) -> str:
        choice = self.rng.choice
        noun, noun2 = choice(NOUNS), choice(NOUNS)
        text = template.format(
            noun=noun,
            noun2=noun2,
            nouns=_plural(noun),
            adj=choice(ADJECTIVES),
            adj2=choice(ADJECTIVES),
            tech=choice(TECH),
            tech2=choice(TECH),
            verb=choice(VERBS),
            gerund=choice(GERUNDS),
            n=self.rng.randint(3, 12),
        )
        return text[0].upper() + text[1:]


def tag_vocabulary(size: int) -> list[str]:
    """``size`` distinct tag names: the plain words first, then pairs of them, then numbered topics."""
    pairs = (f"{a}-{b}" for a, b in itertools.permutations(TAG_WORDS, 2))
    numbered = (f"topic-{i}" for i in itertools.count(1))
    return list(itertools.islice(itertools.chain(TAG_WORDS, pairs, numbered), size))


class _Shuffle:
    """A cheap bijection of ``range(n)`` (``i -> a*i + b mod n``): skewed ranks land on scattered ids."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.n = max(n, 1)
        self.a = 1
        if self.n > 2:
            self.a = rng.randrange(1, self.n)
            while math.gcd(self.a, self.n) != 1:
                self.a = rng.randrange(1, self.n)
        self.b = rng.randrange(self.n)

    def __call__(self, i: int) -> int:
        return (self.a * i + self.b) % self.n


def _count(rng: random.Random, mean: float) -> int:
    """A count with the given mean and a long tail (rounded exponential): most rows have a few, some many."""
    return int(rng.expovariate(1.0 / mean) + 0.5) if mean > 0 else 0


def _pick_distinct(
    rng: random.Random, n: int, k: int, *, skew: float, shuffle: _Shuffle, exclude: int = -1
) -> list[int]:
    """``k`` distinct indexes of ``range(n)`` (never ``exclude``), popular ones more likely; sorted."""
    available = n - (1 if 0 <= exclude < n else 0)
    k = min(k, available)
    if k <= 0:
        return []
    if 2 * k > available:  # dense: sample outright rather than rejecting most skewed draws
        picks = [i for i in rng.sample(range(n), min(n, k + 1)) if i != exclude][:k]
        return sorted(picks)
    chosen: set[int] = set()
    while len(chosen) < k:
        i = shuffle(int(n * rng.random() ** skew))
        if i != exclude:
            chosen.add(i)
    return sorted(chosen)


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _stream(seed: int, name: str) -> random.Random:
    """One generator per table, so more comments never change the articles of a seed.

    A ``str`` seed is hashed with SHA-512 (not ``hash()``), so it gives the same numbers in every process.
    """
    return random.Random(f"{seed}:{name}")  # noqa: S311 - demo data, not secrets


@dataclass
class _Plan:
    """Everything the row generators share: id ranges, tag ids by popularity and the timestamps of users/articles."""

    options: SeedOptions
    first_user_id: int
    first_article_id: int
    tag_ids: list[int]  # most popular first
    password_hash: str
    window_end_us: int
    user_us: "array[int]" = field(default_factory=lambda: array("q"))
    article_us: "array[int]" = field(default_factory=lambda: array("q"))
    sentences: list[str] = field(default_factory=list)
    comment_sentences: list[str] = field(default_factory=list)
    favorites_of_article: "array[int]" = field(default_factory=lambda: array("q"))  # see count_favorites

    @classmethod
    def build(
        cls,
        options: SeedOptions,
        *,
        first_user_id: int,
        first_article_id: int,
        tag_ids: list[int],
        password_hash: str,
        newest_article: datetime | None,
    ) -> "_Plan":
        rng = _stream(options.seed, "time")
        end = _to_us(BASE_DATE) - rng.randrange(24 * 3600) * 1_000_000
        start = end - YEAR_US
        if newest_article is not None:
            newest = _to_us(newest_article)
            if newest >= start:
                # Keep ids growing with created_at across runs: start after the newest article and end a year
                # later, or now if that is sooner (articles dated in the future would look odd).
                start = newest + 1_000_000
                end = max(min(start + YEAR_US, _to_us(datetime.now(UTC))), start + 3600 * 1_000_000)
        plan = cls(options, first_user_id, first_article_id, tag_ids, password_hash, end)
        # Accounts are opened in the year before the first article; both sequences are sorted by id.
        n_users, n_articles = options.users, options.articles
        users_start, span = start - YEAR_US, end - start
        plan.user_us = array("q", (users_start + int(YEAR_US * (i + rng.random()) / n_users) for i in range(n_users)))
        plan.article_us = array("q", (start + int(span * (i + rng.random()) / n_articles) for i in range(n_articles)))
        words = _Words(_stream(options.seed, "words"))
        plan.sentences = [words.fill(words.rng.choice(SENTENCE_TEMPLATES)) for _ in range(SENTENCE_POOL)]
        plan.comment_sentences = [
            words.fill(words.rng.choice(COMMENT_TEMPLATES + SENTENCE_TEMPLATES)) for _ in range(COMMENT_POOL)
        ]
        return plan

    def after(self, rng: random.Random, us: int) -> int:
        """A moment between ``us`` and the end of the window."""
        return us + int(rng.random() * max(self.window_end_us - us, 0))

    # Row generators: one tuple per row, in the column order of COLUMNS[table].

    def users(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "users")
        for i, created in enumerate(self.user_us):
            uid = self.first_user_id + i
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            username = f"{first}_{last}_{uid}"  # the id makes it unique, across runs too
            email = f"{first}.{last}.{uid}@{rng.choice(DOMAINS)}"
            bio = rng.choice(self.sentences) if rng.random() < 0.6 else None
            updated = created if rng.random() < 0.7 else self.after(rng, created)
            yield (
                uid,
                username,
                email,
                self.password_hash,
                bio,
                None,
                Role.USER.value,
                UserStatus.ACTIVE.value,
                _at(created),
                _at(updated),
            )

    def count_favorites(self) -> None:
        """Each article's favorites, counted before the articles are written, so they go in with the right
        ``favorites_count`` (a recount afterwards would rewrite most of the biggest table). It draws the same
        favorites that ``favorites()`` yields later: the stream is replayed from its seed."""
        counts = array("q", bytes(8 * self.options.articles))
        first = self.first_article_id
        for _, article_id, _ in self.favorites():
            counts[article_id - first] += 1
        self.favorites_of_article = counts

    def articles(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "articles")
        words = _Words(rng)
        n_users = self.options.users
        authors = _Shuffle(n_users, rng)
        sentences = self.sentences
        for i, created in enumerate(self.article_us):
            aid = self.first_article_id + i
            title = words.fill(rng.choice(TITLE_TEMPLATES))
            body = "\n\n".join(" ".join(rng.choices(sentences, k=rng.randint(2, 5))) for _ in range(rng.randint(1, 4)))
            author = self.first_user_id + authors(int(n_users * rng.random() ** 2))  # a few prolific authors
            updated = created if rng.random() < 0.75 else self.after(rng, created)
            yield (
                aid,
                f"{slugify(title)}-{aid:x}",
                title,
                rng.choice(sentences),
                body,
                author,
                _at(created),
                _at(updated),
                self.favorites_of_article[i],
            )

    def article_tags(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "article_tags")
        tag_ids = self.tag_ids
        if not tag_ids:
            return
        # Zipf-like popularity: the r-th most popular tag is used about 1/r as often as the first.
        cum_weights = list(itertools.accumulate(1.0 / (r + 1) ** 1.07 for r in range(len(tag_ids))))
        ranks = range(len(tag_ids))
        sizes = range(len(TAGS_PER_ARTICLE_WEIGHTS))
        for i in range(self.options.articles):
            k = min(rng.choices(sizes, weights=TAGS_PER_ARTICLE_WEIGHTS)[0], len(tag_ids))
            chosen: set[int] = set()
            while len(chosen) < k:
                chosen.update(rng.choices(ranks, cum_weights=cum_weights, k=k - len(chosen)))
            aid, created = self.first_article_id + i, _at(self.article_us[i])
            for rank in sorted(chosen):
                yield (aid, tag_ids[rank], created)

    def follows(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "follows")
        n = self.options.users
        popular = _Shuffle(n, rng)
        for i in range(n):
            for j in _pick_distinct(
                rng, n, _count(rng, self.options.follows_per_user), skew=2.0, shuffle=popular, exclude=i
            ):
                since = max(self.user_us[i], self.user_us[j])
                yield (self.first_user_id + i, self.first_user_id + j, _at(self.after(rng, since)))

    def favorites(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "favorites")
        n = self.options.articles
        popular = _Shuffle(n, rng)
        for i in range(self.options.users):
            for j in _pick_distinct(rng, n, _count(rng, self.options.favorites_per_user), skew=2.0, shuffle=popular):
                yield (self.first_user_id + i, self.first_article_id + j, _at(self.after(rng, self.article_us[j])))

    def comments(self) -> Iterator[Row]:
        rng = _stream(self.options.seed, "comments")
        n_users = self.options.users
        if not n_users:
            return
        talkers = _Shuffle(n_users, rng)
        pool = self.comment_sentences
        for i, published in enumerate(self.article_us):
            k = _count(rng, self.options.comments_per_article)
            # Sorted: within an article, comment ids grow with created_at.
            for created in sorted(self.after(rng, published) for _ in range(k)):
                body = " ".join(rng.choices(pool, k=rng.randint(1, 3)))
                author = self.first_user_id + talkers(int(n_users * rng.random() ** 1.5))
                updated = created if rng.random() < 0.9 else self.after(rng, created)
                yield (body, self.first_article_id + i, author, _at(created), _at(updated))


COLUMNS: dict[str, tuple[str, ...]] = {
    "users": (
        "id",
        "username",
        "email",
        "password_hash",
        "bio",
        "image",
        "role",
        "status",
        "created_at",
        "updated_at",
    ),
    "articles": (
        "id",
        "slug",
        "title",
        "description",
        "body",
        "author_id",
        "created_at",
        "updated_at",
        "favorites_count",
    ),
    "article_tags": ("article_id", "tag_id", "article_created_at"),
    "follows": ("follower_id", "followee_id", "created_at"),
    "favorites": ("user_id", "article_id", "created_at"),
    "comments": ("body", "article_id", "author_id", "created_at", "updated_at"),  # ids from the identity column
}


class _Writer(Protocol):
    async def write(self, table: str, rows: list[Row]) -> None: ...


class _CopyWriter:
    """PostgreSQL: binary COPY through the asyncpg connection, inside the SQLAlchemy connection's transaction."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def write(self, table: str, rows: list[Row]) -> None:
        await self.driver.copy_records_to_table(table, records=rows, columns=list(COLUMNS[table]))


class _ExecuteManyWriter:
    """SQLite (and any other dialect): ``executemany`` of a Core insert."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def write(self, table: str, rows: list[Row]) -> None:
        names = COLUMNS[table]
        await self.conn.execute(
            Base.metadata.tables[table].insert(), [dict(zip(names, row, strict=True)) for row in rows]
        )


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


async def _written(writer: _Writer, table: str, batches: Iterator[list[Row]]) -> AsyncIterator[list[Row]]:
    """Write every batch, yielding each once it is in; the next batch is generated in a thread meanwhile.

    Generating rows is Python work and ingesting them is the database's, so overlapping the two nearly halves the
    time on a two-core machine. Generation stays sequential, so the rows are the same as without the overlap.
    """
    pending: asyncio.Task[None] | None = None
    written: list[Row] = []
    try:
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if pending is not None:
                await pending
                pending = None
                yield written
            if batch is None:
                return
            pending, written = asyncio.create_task(writer.write(table, batch)), batch
    finally:
        if pending is not None:  # generation failed while a batch was being written: the transaction is doomed
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


async def _check_schema(conn: AsyncConnection) -> None:
    present: set[str] = await conn.run_sync(lambda sync_conn: set(inspect(sync_conn).get_table_names()))
    missing = [name for name in TABLES if name not in present]
    if missing:
        raise SeedError(f"the database is not migrated (missing tables: {', '.join(missing)}); run `service migrate`")


async def _skip_foreign_key_checks(conn: AsyncConnection) -> bool:
    """PostgreSQL: skip the per-row foreign-key triggers for this transaction, as ``pg_restore`` does, if allowed.

    Each generated row refers only to rows this transaction inserted or holds locked, so the checks cannot fail,
    and they cost more than the COPY itself (about 4x on the link tables). Replica mode would skip every trigger,
    so it is used only while the tables have no triggers of their own, and only by a role that may set it
    (a superuser, or one granted ``SET ON PARAMETER session_replication_role``).
    """
    own_triggers = await conn.execute(
        text(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname = ANY(:tables) AND pg_table_is_visible(c.oid)"
        ),
        {"tables": list(TABLES)},
    )
    if own_triggers.scalar_one():
        return False
    try:
        async with conn.begin_nested():  # a refusal must not abort the transaction
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
    except DBAPIError:
        return False
    return True


async def _next_id(conn: AsyncConnection, table: str) -> int:
    """The first id to assign: past the largest id and, on PostgreSQL, past every id the sequence handed out."""
    biggest = (await conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}"))).scalar_one()  # noqa: S608 - fixed names
    if conn.dialect.name == "postgresql":
        issued = (
            await conn.execute(
                text("SELECT pg_sequence_last_value(pg_get_serial_sequence(:t, 'id')::regclass)"), {"t": table}
            )
        ).scalar_one()
        biggest = max(biggest, issued or 0)
    return int(biggest) + 1


async def _ensure_tags(conn: AsyncConnection, names: list[str]) -> tuple[dict[str, int], int]:
    """Ids of the vocabulary's tags, creating the missing ones; also how many were created."""
    if not names:
        return {}, 0
    tags = Base.metadata.tables["tags"]
    before = (await conn.execute(select(func.count()).select_from(tags))).scalar_one()
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await conn.execute(pg_insert(tags).on_conflict_do_nothing(), [{"name": n} for n in names])
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        await conn.execute(sqlite_insert(tags).on_conflict_do_nothing(), [{"name": n} for n in names])
    after = (await conn.execute(select(func.count()).select_from(tags))).scalar_one()
    rows = await conn.execute(select(Tag.id, Tag.name).where(Tag.name.in_(names)))
    return {name: tag_id for tag_id, name in rows.all()}, int(after - before)


def _progress_bar(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description:<13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


async def seed(
    engine: AsyncEngine, options: SeedOptions, progress: bool = False, *, console: Console | None = None
) -> SeedReport:
    """Insert users, tags, articles, article tags, follows, favorites and comments in one transaction, then ANALYZE.

    Raises ``SeedError`` when the schema is missing or a generated name collides with an existing row.
    """
    started = time.perf_counter()
    password_hash = await asyncio.to_thread(hash_password_sync, options.password)  # once: every user shares it
    counts = dict.fromkeys(TABLES, 0)
    seconds = dict.fromkeys(TABLES, 0.0)
    sample_email: str | None = None
    async with engine.connect() as conn:
        await _check_schema(conn)
        postgres = conn.dialect.name == "postgresql"
        checks_skipped = False
        if postgres:  # ids are assigned and tags looked up here: keep other writers out until commit (not readers)
            await conn.execute(text("LOCK TABLE users, articles, tags IN SHARE ROW EXCLUSIVE MODE"))
            checks_skipped = await _skip_foreign_key_checks(conn)
        vocabulary = tag_vocabulary(options.tags)
        tags_started = time.perf_counter()
        ids_by_name, counts["tags"] = await _ensure_tags(conn, vocabulary)
        seconds["tags"] = time.perf_counter() - tags_started
        ranked = vocabulary[:]
        _stream(options.seed, "tags").shuffle(ranked)  # which tags are popular depends on the seed
        newest = (await conn.execute(select(func.max(Article.created_at)))).scalar_one()
        plan = _Plan.build(
            options,
            first_user_id=await _next_id(conn, "users"),
            first_article_id=await _next_id(conn, "articles"),
            tag_ids=[ids_by_name[name] for name in ranked],
            password_hash=password_hash,
            newest_article=newest,
        )
        counting_started = time.perf_counter()
        await asyncio.to_thread(plan.count_favorites)
        seconds["favorites"] += time.perf_counter() - counting_started
        writer: _Writer
        if postgres:
            raw = await conn.get_raw_connection()
            writer = _CopyWriter(raw.driver_connection)
        else:
            writer = _ExecuteManyWriter(conn)
        generators: dict[str, tuple[Callable[[], Iterator[Row]], float]] = {
            "users": (plan.users, options.users),
            "articles": (plan.articles, options.articles),
            "article_tags": (plan.article_tags, options.articles * 2.2 if options.tags else 0),
            "follows": (plan.follows, options.users * min(options.follows_per_user, max(options.users - 1, 0))),
            "favorites": (plan.favorites, options.users * min(options.favorites_per_user, options.articles)),
            "comments": (plan.comments, options.articles * options.comments_per_article if options.users else 0),
        }
        try:
            with _progress_bar(progress, console) as bar:
                tag_task = bar.add_task("tags", total=len(vocabulary) or 1, rate="")
                bar.update(tag_task, completed=len(vocabulary) or 1)
                tasks: dict[str, TaskID] = {
                    name: bar.add_task(name, total=max(int(expected), 1), rate="")
                    for name, (_, expected) in generators.items()
                }
                for name, (rows, _) in generators.items():
                    table_started = time.perf_counter()
                    async for batch in _written(writer, name, _batches(rows(), options.batch_size)):
                        counts[name] += len(batch)
                        if name == "users" and sample_email is None:
                            sample_email = batch[0][2]
                        rate = counts[name] / max(time.perf_counter() - table_started, 1e-9)
                        bar.update(tasks[name], completed=counts[name], rate=f"{rate:,.0f} rows/s")
                    bar.update(tasks[name], total=max(counts[name], 1), completed=max(counts[name], 1))
                    seconds[name] = time.perf_counter() - table_started
        except IntegrityError as exc:
            raise SeedError(f"a generated row collides with an existing one: {exc.orig}") from exc
        except Exception as exc:
            if type(exc).__name__ == "UniqueViolationError":  # asyncpg's, raised by COPY
                raise SeedError(f"a generated row collides with an existing one: {exc}") from exc
            raise
        if postgres:  # explicit ids bypassed the identity sequences: move them past what we inserted
            for table in ("users", "articles"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608 - fixed names
                    )
                )
        counters_started = time.perf_counter()
        await counters.lock_for_recount(conn)  # the bulk load bypassed the service: count what it wrote
        await counters.rebuild(conn)
        counters_seconds = time.perf_counter() - counters_started
        await conn.commit()
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))  # fresh planner statistics: the tables just grew by orders of magnitude
        await conn.commit()
    elapsed = time.perf_counter() - started
    report = SeedReport(counts, seconds, elapsed, options.password, sample_email, not checks_skipped, counters_seconds)
    logger.info("database seeded", extra={"rows": counts, "seconds": round(elapsed, 2), "seed": options.seed})
    return report


def print_report(report: SeedReport, console: Console) -> None:
    table = RichTable(title="Seeded", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("rows/s", justify="right")
    for name, count in report.counts.items():
        spent = report.seconds.get(name, 0.0)
        table.add_row(name, f"{count:,}", f"{spent:.1f}", f"{count / spent:,.0f}" if spent > 0 else "")
    table.add_row("(counters)", "", f"{report.counters_seconds:.1f}", "")
    table.add_row("total", f"{report.total:,}", f"{report.elapsed:.1f}", f"{report.rows_per_second:,.0f}", style="bold")
    console.print(table)
    console.print(
        f"{report.total:,} rows in {report.elapsed:.1f} s ({report.rows_per_second:,.0f} rows/s, ANALYZE included)"
    )
    if not report.foreign_keys_checked:
        console.print(
            "Foreign-key triggers were skipped for the bulk load (every generated reference is to a new row)."
        )
    if report.sample_email is not None:
        console.print(
            f"Every seeded user's password is [bold]{report.password}[/bold] (e.g. log in as {report.sample_email})",
            highlight=False,
        )
