"""The cases: what each one requests, built from the test data, and the data files the Lua scripts read.

Every read case runs twice, anonymous (``list``) and with a token (``list:token``), except the feed, which needs one.
Read cases share ``bench/lua/requests.lua``, which cycles through the lines of the case's data file; the write mix
is ``bench/lua/writes.lua``.
"""

import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.harness.database import TestData
from bench.harness.options import LUA

READ, DEEP, WRITES = "read", "deep page", "writes"  # report groups


@dataclass(frozen=True)
class Case:
    name: str  # e.g. "list:token"
    group: str  # READ, DEEP or WRITES
    what: str  # the request, for the report
    lines: list[str]  # data-file lines: "<path>" or "<path>\t<token>" (empty for the write mix)

    @property
    def script(self) -> Path:
        return LUA / ("writes.lua" if self.group == WRITES else "requests.lua")


def _q(value: str) -> str:
    return quote(value, safe="")


def _paths(data: TestData) -> dict[str, tuple[str, list[str]]]:
    """name -> (what it requests, the paths it cycles through), for the cases that run anonymous and with a token."""
    top = data.top_tags[0]
    return {
        "list": ("GET /api/articles?limit=20", ["/api/articles?limit=20"]),
        "list_tag": (f"?tag={top}&limit=20", [f"/api/articles?tag={_q(top)}&limit=20"]),
        "list_tags20": ("?tag=<top 20 tags>&limit=20", [f"/api/articles?tag={_q(t)}&limit=20" for t in data.top_tags]),
        "list_author": ("?author=<author>", [f"/api/articles?author={_q(u)}" for u in data.authors]),
        "list_favorited": ("?favorited=<user>", [f"/api/articles?favorited={_q(u)}" for u in data.favoriters]),
        "article": ("GET /api/articles/{slug}", [f"/api/articles/{_q(s)}" for s in data.slugs]),
        "comments": ("GET /api/articles/{slug}/comments", [f"/api/articles/{_q(s)}/comments" for s in data.slugs]),
        "profile": ("GET /api/profiles/{username}", [f"/api/profiles/{_q(u)}" for u in data.authors]),
        "tags": ("GET /api/tags", ["/api/tags"]),
    }


def _with_tokens(paths: list[str], tokens: list[str]) -> list[str]:
    """One line per (path, token) pair, as many lines as the longer list: both cycle."""
    return [f"{paths[i % len(paths)]}\t{tokens[i % len(tokens)]}" for i in range(max(len(paths), len(tokens)))]


def build_cases(data: TestData, tokens: list[str], *, writes: bool) -> list[Case]:
    cases: list[Case] = []
    for name, (what, paths) in _paths(data).items():
        cases.append(Case(name, READ, what, paths))
        cases.append(Case(f"{name}:token", READ, what, _with_tokens(paths, tokens)))
    cases.append(Case("feed", READ, "GET /api/articles/feed", _with_tokens(["/api/articles/feed"], tokens)))
    deep = f"/api/articles?limit=20&offset={max(data.article_count - 40, 0)}"
    cases.append(Case("list_deep", DEEP, deep.removeprefix("/api/articles"), [deep]))
    cases.append(Case("list_deep:token", DEEP, deep.removeprefix("/api/articles"), _with_tokens([deep], tokens)))
    if writes:
        cases.append(Case("writes", WRITES, "register, login, article, comment, favorite", []))
    return cases


def soak_lines(cases: list[Case], groups: tuple[str, ...] = (READ,)) -> list[str]:
    """A soak's mixed read load: as many lines of every case of ``groups``, shuffled (the same way every run)."""
    per_case = 200
    lines = [case.lines[i % len(case.lines)] for case in cases if case.group in groups for i in range(per_case)]
    random.Random(1).shuffle(lines)
    return lines


def write_data_file(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / (name.replace(":", "-") + ".txt")
    path.write_text("\n".join(lines) + "\n")
    return path
