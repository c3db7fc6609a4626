"""The benchmark database: one per scale, seeded once and kept (seeding a million articles takes minutes).

Every run migrates it (the schema may have moved on), rebuilds the maintained counters when the ``service`` command
can, removes what an earlier write mix left behind, and runs ``VACUUM ANALYZE``. What was seeded is written into the
database's own comment (``COMMENT ON DATABASE``), so the schema carries nothing the migrations do not know about.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.harness.options import SEED, Options

SERVICE = Path(sys.executable).parent / "service"  # the `service` command of the virtualenv running the harness
WRITER_PREFIX = "bench_"  # usernames the write mix registers; seeded usernames start with a first name
TABLES = ("users", "articles", "tags", "article_tags", "follows", "favorites", "comments")
SEED_TIMEOUT_S = 3 * 3600
COMMAND_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Database:
    admin_url: str  # plain libpq/asyncpg URL of a maintenance database, e.g. .../postgres
    name: str

    @property
    def dsn(self) -> str:
        """asyncpg DSN of the bench database (what the ceiling takes)."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{self.name}"))

    @property
    def sqlalchemy_url(self) -> str:
        """SQLAlchemy URL of the bench database (what the service takes)."""
        return "postgresql+asyncpg" + self.dsn[self.dsn.index(":") :]


@dataclass(frozen=True)
class TestData:
    """What the requests are made of, read once after seeding."""

    slugs: list[str]  # articles that have comments
    authors: list[str]  # usernames of random authors of at least one article
    favoriters: list[str]  # usernames of random users who favorited something
    top_tags: list[str]  # the 20 most used tags, most used first
    login_emails: list[str]  # users who follow an author of articles: their feed is not empty
    article_count: int


# -- SQL helpers: each opens its own connection, so the harness itself stays synchronous ------------------------


async def _fetch_async(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_fetch_async(dsn, sql, *args))


def execute(dsn: str, *statements: str) -> None:
    """Run statements one by one outside a transaction (CREATE DATABASE and VACUUM refuse to run inside one)."""

    async def _run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(_run())


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# -- the database's lifecycle -------------------------------------------------------------------------------------


def seeded_with(db: Database) -> dict[str, Any] | None:
    """What the database was seeded with (from its comment), or None when it is missing or was never seeded."""
    rows = fetch(
        db.admin_url,
        "SELECT shobj_description(oid, 'pg_database') AS note FROM pg_database WHERE datname = $1",
        db.name,
    )
    if not rows:
        return None
    try:
        note: dict[str, Any] = json.loads(rows[0]["note"] or "null") or {}
    except json.JSONDecodeError:
        return {}
    return note


def _service(args: Sequence[str], env: dict[str, str], *, attached: bool, log: Path) -> None:
    """Run a `service` subcommand: on the terminal when ``attached`` (its progress bar shows), else into ``log``."""
    command = [str(SERVICE), *args]
    timeout = SEED_TIMEOUT_S if args[0] == "seed" else COMMAND_TIMEOUT_S
    with log.open("a") as out:
        out.write(f"$ service {' '.join(args)}\n")
        out.flush()
        stdout, stderr = (None, None) if attached else (out, subprocess.STDOUT)
        done = subprocess.run(command, env=env, timeout=timeout, check=False, stdout=stdout, stderr=stderr)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"`service {' '.join(args)}` failed ({done.returncode}): see {log}")


def has_counters_command(env: dict[str, str]) -> bool:
    """Whether this version of the service has `service counters rebuild` (maintained counter columns)."""
    probe = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(SERVICE), "counters", "rebuild", "--help"], env=env, capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def create_and_seed(db: Database, options: Options, env: dict[str, str], log: Path) -> None:
    execute(
        db.admin_url, f"DROP DATABASE IF EXISTS {_quote(db.name)} WITH (FORCE)", f"CREATE DATABASE {_quote(db.name)}"
    )
    _service(["migrate"], env, attached=False, log=log)
    print(f"seeding {db.name}: {options.users:,} users, {options.articles:,} articles (seed {SEED})", flush=True)
    seed_args = ["seed", "--users", str(options.users), "--articles", str(options.articles), "--seed", str(SEED)]
    _service(seed_args, env, attached=sys.stdout.isatty(), log=log)
    note = json.dumps({"users": options.users, "articles": options.articles, "seed": SEED})
    execute(db.admin_url, f"COMMENT ON DATABASE {_quote(db.name)} IS '{note}'")


def remove_written_rows(db: Database) -> int:
    """Delete the accounts a write mix registered; their articles, comments and favorites go with them (cascade)."""
    pattern = WRITER_PREFIX.replace("_", r"\_") + "%"  # "_" is LIKE's any-character
    rows = fetch(
        db.dsn, "WITH gone AS (DELETE FROM users WHERE username LIKE $1 RETURNING 1) SELECT count(*) FROM gone", pattern
    )
    return int(rows[0][0])


def prepare(db: Database, options: Options, env: dict[str, str], log: Path) -> None:
    """Make the bench database ready: seeded at the wanted scale, migrated, counters right, statistics fresh."""
    wanted = {"users": options.users, "articles": options.articles, "seed": SEED}
    found = seeded_with(db)
    if options.reseed or found != wanted:
        why = "--reseed" if options.reseed else "missing" if found is None else f"seeded with {found or 'nothing'}"
        print(f"database {db.name}: {why}; creating it", flush=True)
        create_and_seed(db, options, env, log)
    else:
        print(f"database {db.name}: seeded with {found}; migrating", flush=True)
        _service(["migrate"], env, attached=False, log=log)
        removed = remove_written_rows(db)
        if removed:
            print(f"  removed {removed} accounts left by an earlier write mix")
        if has_counters_command(env):
            print("  service counters rebuild", flush=True)
            _service(["counters", "rebuild"], env, attached=False, log=log)
    print("  VACUUM ANALYZE", flush=True)
    execute(db.dsn, "VACUUM ANALYZE")


class Monitor:
    """One connection held for the whole run, opened before the servers take theirs (PostgreSQL's max_connections
    is shared with them): whether statements still run on the bench database, and the connection budget."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._runner = asyncio.Runner()
        self._conn: asyncpg.Connection = self._runner.run(asyncpg.connect(db.admin_url))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the server may be gone already; nothing else to release
            self._runner.run(self._conn.close())
        self._runner.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def active_queries(self) -> int:
        """Statements running on the bench database right now."""
        sql = """SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND state = 'active' AND backend_type = 'client backend'"""
        return int(self._runner.run(self._conn.fetchval(sql, self.db.name)))

    def free_connections(self) -> int:
        """Connections PostgreSQL still accepts (max_connections less those in use)."""
        sql = """SELECT current_setting('max_connections')::int
                        - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"""
        return int(self._runner.run(self._conn.fetchval(sql)))


def row_counts(db: Database) -> dict[str, int]:
    return {table: int(fetch(db.dsn, f"SELECT count(*) FROM {table}")[0][0]) for table in TABLES}


# -- test data ----------------------------------------------------------------------------------------------------

_SLUGS = """
    SELECT slug FROM articles a WHERE EXISTS (SELECT 1 FROM comments c WHERE c.article_id = a.id)
    ORDER BY random() LIMIT $1"""
_AUTHORS = """
    SELECT username FROM users u WHERE EXISTS (SELECT 1 FROM articles a WHERE a.author_id = u.id)
    ORDER BY random() LIMIT $1"""
_FAVORITERS = """
    SELECT username FROM users u WHERE EXISTS (SELECT 1 FROM favorites f WHERE f.user_id = u.id)
    ORDER BY random() LIMIT $1"""
_TOP_TAGS = """
    SELECT t.name FROM tags t JOIN article_tags at ON at.tag_id = t.id
    GROUP BY t.name ORDER BY count(*) DESC, t.name LIMIT $1"""
_FOLLOWERS = """
    SELECT email FROM users u WHERE EXISTS (
        SELECT 1 FROM follows f JOIN articles a ON a.author_id = f.followee_id WHERE f.follower_id = u.id)
    ORDER BY random() LIMIT $1"""


def load_test_data(db: Database) -> TestData:
    """Random but reproducible picks (``setseed``), so two runs on one database request the same things."""

    async def _load() -> TestData:
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("SELECT setseed(0.5)")

            async def column(sql: str, limit: int) -> list[str]:
                return [str(row[0]) for row in await conn.fetch(sql, limit)]

            return TestData(
                slugs=await column(_SLUGS, 200),
                authors=await column(_AUTHORS, 100),
                favoriters=await column(_FAVORITERS, 100),
                top_tags=await column(_TOP_TAGS, 20),
                login_emails=await column(_FOLLOWERS, 20),
                article_count=int(await conn.fetchval("SELECT count(*) FROM articles")),
            )
        finally:
            await conn.close()

    data = asyncio.run(_load())
    empty = [name for name, values in vars(data).items() if isinstance(values, list) and not values]
    if empty:
        raise RuntimeError(f"the seeded database gave no {', '.join(empty)}: reseed it with --reseed")
    return data
