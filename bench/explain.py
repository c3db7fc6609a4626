"""The query plans of every listing, as the service sends them, on a seeded benchmark database.

    .venv/bin/python -m bench.explain [--database conduit_bench_1m]

For each listing (no filter, one tag (the most used and a rare one), an author (prolific and ordinary), a
favoriting user, the feed, combinations) it runs ``EXPLAIN (ANALYZE, BUFFERS)`` on the service's own compiled
statements (``service.articles.service``), for its total and its page, at offset 0 and at a deep offset, and
flags what must not appear: a sequential scan of ``articles`` or ``article_tags``, or a sort of more rows than
a page. Writes ``bench/results/explain-<database>.md`` and prints a summary; exit status 1 if anything is flagged.
"""

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from service.articles import service as articles_service
from service.core.db import Query

RESULTS = Path(__file__).resolve().parent / "results"
DEEP_FROM_END = 40  # the deep page: offset = (rows matching) - this
_SORT_ROWS = re.compile(r"Sort .*?actual time=\S+ rows=(\d+)")
_SEQ_SCAN = re.compile(r"Seq Scan on (articles|article_tags)\b")


def _statement(query: Query, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """The very SQL the service sends, and its arguments."""
    dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    sql, names, literals = query.for_postgresql(dialect)
    return sql, [params[name] if name in params else literals[name] for name in names]


async def _pick(conn: asyncpg.Connection) -> dict[str, Any]:
    """Representative parameter values, read from the data."""
    top_tag = await conn.fetchval("SELECT name FROM tags ORDER BY articles_count DESC LIMIT 1")
    rare_tag = await conn.fetchval("SELECT name FROM tags WHERE articles_count > 0 ORDER BY articles_count LIMIT 1")
    prolific = await conn.fetchval("SELECT lower(username) FROM users ORDER BY articles_count DESC LIMIT 1")
    ordinary = await conn.fetchval(
        "SELECT lower(username) FROM users WHERE articles_count BETWEEN 5 AND 20 ORDER BY id LIMIT 1"
    )
    fan = await conn.fetchval("SELECT lower(username) FROM users ORDER BY favorited_count DESC LIMIT 1")
    viewer = await conn.fetchval(
        "SELECT follower_id FROM follows GROUP BY follower_id ORDER BY count(*) DESC, follower_id LIMIT 1"
    )
    return {
        "top_tag": top_tag,
        "rare_tag": rare_tag,
        "prolific": prolific,
        "ordinary": ordinary,
        "fan": fan,
        "viewer": viewer,
    }


def _cases(v: dict[str, Any]) -> list[tuple[str, frozenset[str], dict[str, Any]]]:
    return [
        ("no filter", frozenset(), {}),
        (f"tag={v['top_tag']} (most used)", frozenset({"tag"}), {"tag": v["top_tag"]}),
        (f"tag={v['rare_tag']} (least used)", frozenset({"tag"}), {"tag": v["rare_tag"]}),
        (f"author={v['prolific']} (most articles)", frozenset({"author"}), {"author": v["prolific"]}),
        (f"author={v['ordinary']}", frozenset({"author"}), {"author": v["ordinary"]}),
        (f"favorited={v['fan']} (most favorites)", frozenset({"favorited"}), {"favorited": v["fan"]}),
        (f"feed of user {v['viewer']} (most follows)", frozenset({articles_service.FEED}), {}),
        (
            f"tag={v['top_tag']} & author={v['prolific']}",
            frozenset({"tag", "author"}),
            {"tag": v["top_tag"], "author": v["prolific"]},
        ),
        (
            f"tag={v['top_tag']} & favorited={v['fan']}",
            frozenset({"tag", "favorited"}),
            {"tag": v["top_tag"], "favorited": v["fan"]},
        ),
    ]


def _statement_args(query: Query, params: dict[str, Any]) -> list[Any]:
    sql, args = _statement(query, params)
    return [sql, *args]


async def _explain(conn: asyncpg.Connection, query: Query, params: dict[str, Any]) -> str:
    sql, args = _statement(query, params)
    rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    return "\n".join(row[0] for row in rows)


def _flags(plan: str, limit: int) -> list[str]:
    flags = [f"sequential scan of {m}" for m in _SEQ_SCAN.findall(plan)]
    flags += [f"sort of {n} rows" for n in _SORT_ROWS.findall(plan) if int(n) > limit]
    return flags


async def main(database: str, admin: str) -> int:
    conn = await asyncpg.connect(f"{admin.rstrip('/')}/{database}")
    try:
        picked = await _pick(conn)
        lines = [f"# Query plans: `{database}`", "", f"Parameters: {picked}", ""]
        summary, flagged = [], 0
        for title, filters, values in _cases(picked):
            total_query, page_query = articles_service._listing(filters)
            params = {"viewer_id": picked["viewer"], "limit": 20, **values}
            total = int(await conn.fetchval(*_statement_args(total_query, params)) or 0)
            for label, offset in (("offset 0", 0), ("deep", max(total - DEEP_FROM_END, 0))):
                page_plan = await _explain(conn, page_query, {**params, "offset": offset})
                flags = _flags(page_plan, 20 + offset if offset else 20)
                ms = re.search(r"Execution Time: ([\d.]+) ms", page_plan)
                summary.append((title, label, offset, total, float(ms.group(1)) if ms else -1.0, flags))
                flagged += bool(flags)
                lines += [
                    f"## {title}: page, {label} (offset {offset:,}, {total:,} rows match)",
                    "",
                    "```",
                    page_plan,
                    "```",
                    "",
                ]
            total_plan = await _explain(conn, total_query, params)
            lines += [f"## {title}: total", "", "```", total_plan, "```", ""]
        table = ["| listing | page | offset | matching | execution ms | flags |", "|---|---|---:|---:|---:|---|"]
        table += [
            f"| {t} | {lb} | {o:,} | {n:,} | {ms:.2f} | {', '.join(f) or 'none'} |" for t, lb, o, n, ms, f in summary
        ]
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"explain-{database}.md"
        out.write_text("\n".join([*lines[:4], *table, "", *lines[4:]]) + "\n")
        print("\n".join(table))
        print(f"wrote {out}")
        return 1 if flagged else 0
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="conduit_bench_1m")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432")
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.database, options.admin_url)))
