"""Benchmark: what a page of articles costs, by page size, against a naive N+1 baseline.

Run on demand (never in CI; no thresholds), with PostgreSQL reachable:

    .venv/bin/python bench/list_articles.py [--users 2000] [--articles 20000] [--requests 200]

It creates a scratch database, migrates it, seeds it, then measures, in one run on one machine:
1. GET /api/articles over HTTP (in-process ASGI) at limit=1, 20 and 100, anonymous and as a viewer: statements
   per request and the time relative to limit=1 (our query budget says: same statements, near-flat time);
2. our ``list_articles`` against a naive implementation that loads the page and then, per article, its author,
   tags, favorites count, "favorited" and "following" (1 + 5N statements), both at the service level.
Only ratios are reported: absolute times on a shared 2-core machine mean little.
"""

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.articles import service as articles_service
from service.articles.models import Article, Favorite, Tag, article_tags
from service.core import migrations
from service.core.config import load_settings
from service.core.db import build_sessionmaker, create_engine_for, get_sessionmaker
from service.main import create_app
from service.profiles.models import Follow
from service.seed import SeedOptions, seed
from service.users.models import User

ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def _admin(sql: str) -> None:
    engine = create_engine_for(ADMIN_URL, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


async def naive_list(session: AsyncSession, viewer_id: int | None, limit: int) -> list[dict[str, Any]]:
    """What lazy loading does: one query for the page, then five per article."""
    page = (
        await session.scalars(select(Article).order_by(Article.created_at.desc(), Article.id.desc()).limit(limit))
    ).all()
    items = []
    for article in page:
        author = await session.get(User, article.author_id)
        tags = (
            await session.scalars(
                select(Tag.name)
                .join(article_tags, article_tags.c.tag_id == Tag.id)
                .where(article_tags.c.article_id == article.id)
            )
        ).all()
        count = await session.scalar(
            select(func.count()).select_from(Favorite).where(Favorite.article_id == article.id)
        )
        favorited = following = False
        if viewer_id is not None:
            favorited = await session.get(Favorite, (viewer_id, article.id)) is not None
            following = await session.get(Follow, (viewer_id, article.author_id)) is not None
        items.append(
            {"slug": article.slug, "author": author, "tags": tags, "count": count, "fav": favorited, "fol": following}
        )
    return items


class Counter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.n = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._hit)

    def _hit(self, *args: Any) -> None:
        self.n += 1


async def timed(fn: Callable[[], Awaitable[Any]], repeats: int, counter: Counter) -> tuple[float, float]:
    """Median seconds per call, and statements per call."""
    for _ in range(max(3, repeats // 10)):
        await fn()  # warm caches and the pool
    samples = []
    before = counter.n
    for _ in range(repeats):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), (counter.n - before) / repeats


async def main(users: int, articles: int, repeats: int) -> None:
    name = f"conduit_bench_{uuid.uuid4().hex[:8]}"
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        engine = create_engine_for(url, pool_size=5)
        report = await seed(engine, SeedOptions(users=users, articles=articles, seed=7))
        counter = Counter(engine)
        settings = load_settings(environment="test", database_url=url, log_level="WARNING")
        app = create_app(settings)
        maker = build_sessionmaker(engine)
        app.dependency_overrides[get_sessionmaker] = lambda: maker
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://bench/api") as client:
            login = await client.post(
                "/users/login", json={"user": {"email": report.sample_email, "password": report.password}}
            )
            headers = {"Authorization": f"Token {login.json()['user']['token']}"}
            async with maker() as s:
                viewer_id = await s.scalar(select(User.id).where(User.email == report.sample_email))

            print(f"\nseeded {report.total:,} rows ({articles:,} articles); {repeats} requests per case\n")
            print(f"{'HTTP case':<34}{'statements':>11}{'time vs limit=1':>17}")
            for who, hdrs in (("anonymous", {}), ("viewer", headers)):
                base = None
                for limit in (1, 20, 100):

                    async def call(limit: int = limit, hdrs: dict[str, str] = hdrs) -> None:
                        response = await client.get(f"/articles?limit={limit}", headers=hdrs)
                        assert response.status_code == 200

                    median, statements = await timed(call, repeats, counter)
                    base = base or median
                    print(f"{f'GET /articles?limit={limit} ({who})':<34}{statements:>11.1f}{median / base:>16.2f}x")

            print(f"\n{'service level, viewer':<34}{'ours stmts':>11}{'naive stmts':>12}{'naive/ours time':>17}")
            for limit in (20, 100):

                async def ours(limit: int = limit) -> None:
                    async with maker() as s:
                        await articles_service.list_articles(s, viewer_id, limit=limit)

                async def naive(limit: int = limit) -> None:
                    async with maker() as s:
                        await naive_list(s, viewer_id, limit)

                t_ours, s_ours = await timed(ours, repeats, counter)
                t_naive, s_naive = await timed(naive, max(10, repeats // 4), counter)
                print(f"{f'list_articles limit={limit}':<34}{s_ours:>11.1f}{s_naive:>12.1f}{t_naive / t_ours:>16.1f}x")
        await engine.dispose()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--articles", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.articles, args.requests))
