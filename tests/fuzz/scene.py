"""What the fuzzer's requests meet: per operation a fresh scene of two users, articles, comments and sessions, made
over HTTP through the same in-process app, and the rule that points generated path parameters at them.

Without a scene nearly every generated slug, username or comment id is unknown, and the run proves little more
than that 404 is documented. With it, about two cases in three of an operation with path parameters reach a real
resource (the caller's own or someone else's), and the rest keep the generated value (unknown ones, odd
characters). The choice is a pure function of the generated value, so a run is as repeatable as its seed.
"""

import asyncio
import itertools
import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import schemathesis
from fastapi import FastAPI
from schemathesis import APIOperation, BaseSchema, Case, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text, update

from service.core.config import load_settings
from service.core.db import create_engine_for
from service.main import create_app
from service.models import Base
from service.users.models import Role, User
from tests.helpers import PASSWORD

# schemathesis' operations are generic over its internals; the fuzzer needs none of them.
Operation = APIOperation[Any, Any, Any, Any]

# Examples per operation and pass in the fuzzing phase; the examples and coverage phases add their own (the
# schema's examples; boundary, missing and wrong-typed values of every field), bounded by the schema itself.
MAX_EXAMPLES = 20
SEED = 20261202
BASE_URL = "http://testserver"
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "base-url": BASE_URL,  # never dialled: every request goes to the app in process
    "cache": {"enabled": False},  # nothing carried over between runs
    "generation": {
        "mode": "all",  # positive and negative data
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,  # Hypothesis' derandomize: the same cases on every run and machine
        "database": "none",  # no example database: nothing replayed from an earlier run, nothing written
        # No generated Authorization header: the anonymous pass sends none, the other a real token.
        "with-security-parameters": False,
    },
}

# The five checks the issue names (the rest of schemathesis' catalogue is not switched on here).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# An id no BIGINT column holds: random strings almost never are one, and drivers refuse it (a 500 until fixed).
PAST_BIGINT = str(2**63)
_T = TypeVar("_T")


def in_thread(func: Callable[..., _T], *args: Any) -> _T:
    """Run blocking code that calls ``asyncio.run`` (alembic's env.py, a short-lived engine) off pytest's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func, *args).result()


def run_coroutine(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return in_thread(lambda: asyncio.run(make()))


@cache
def fuzz_schema() -> BaseSchema:
    """The document ``GET /openapi.json`` serves, from an app that is never started (no lifespan, no database):
    cheap enough for import time, where schemathesis needs it to make one test per operation. Each test sends its
    requests to the started app of its backend (the ``fuzz_app`` fixture)."""
    app = create_app(load_settings(environment="test", database_url="sqlite+aiosqlite://", redis_url=None))
    document = json.loads(json.dumps(app.openapi()))  # what the route sends: JSONResponse(app.openapi())
    return schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(CONFIG))


async def empty_database(url: str) -> None:
    """Every table emptied and every id sequence restarted; the schema and the migrations' own rows stay."""
    engine = create_engine_for(url)
    try:
        async with engine.begin() as conn:
            tables = [table for table in Base.metadata.sorted_tables if table.name != "counters"]
            if conn.dialect.name == "postgresql":
                names = ", ".join(f'"{table.name}"' for table in tables)
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(tables):
                    await conn.execute(table.delete())
                await conn.execute(text("DELETE FROM sqlite_sequence"))  # AUTOINCREMENT ids start at 1 again
            await conn.execute(text("UPDATE counters SET value = 0"))
    finally:
        await engine.dispose()


@dataclass
class Account:
    username: str
    email: str
    token: str
    refresh_token: str


@dataclass
class Scene:
    me: Account  # the caller of the authenticated pass
    other: Account
    my_article: str
    their_article: str
    comments: tuple[int, int]  # on my article: mine, theirs
    my_other_session: int  # a second session of mine (the token's own session is left alone)
    issued: set[str] = field(default_factory=set)  # refresh tokens handed out to me


def pick(case: Case[Operation], name: str, choices: Sequence[str], issued: frozenset[str] = frozenset()) -> str | None:
    """One of ``choices``, or None (keep the generated value): a pure function of the generated case as a whole
    (the coverage phase varies the body under one path value, and its cases should not all aim the same way).

    Hypothesis may run one case object again after this aimed it: refresh tokens the service issued (random) are
    masked, so that the choice stays the same."""
    body: Any = None if isinstance(case.body, NotSet) else case.body  # NotSet's repr has its address: not stable
    if isinstance(body, dict):
        body = {key: "<issued>" if isinstance(value, str) and value in issued else value for key, value in body.items()}
    generated = repr((name, case.path_parameters, case.query, body))
    slot = zlib.crc32(generated.encode()) % (len(choices) + 1)
    return choices[slot] if slot < len(choices) else None


class Seeder:
    """Makes scenes over HTTP, through the schema's own operations (so through the app the fuzzer calls)."""

    def __init__(self, app: FastAPI, database_url: str) -> None:
        self.schema = fuzz_schema()
        self.app = app
        self.database_url = database_url
        self._names = itertools.count(1)

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        path_parameters: dict[str, Any] | None = None,
        expect: int = 200,
    ) -> Any:
        operation = self.schema[path][method]
        case = operation.Case(path_parameters=path_parameters, **({} if body is None else {"body": body}))
        response = case.call(headers={"Authorization": f"Token {token}"} if token else None, app=self.app)
        assert response.status_code == expect, f"seeding {method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def account(self) -> Account:
        username = f"fuzz{next(self._names)}"
        email = f"{username}@example.com"
        user = {"username": username, "email": email, "password": PASSWORD}
        body = self.send("POST", "/api/users", body={"user": user}, expect=201)["user"]
        return Account(username, email, body["token"], body["refreshToken"])

    def scene(self, *, admin: bool) -> Scene:
        me, other = self.account(), self.account()
        if admin:
            self._promote(me.username)
        self.send("POST", "/api/users/login", body={"user": {"email": me.email, "password": PASSWORD}})
        sessions = self.send("GET", "/api/user/sessions", token=me.token)["sessions"]
        (second,) = [s["id"] for s in sessions if not s["current"]]
        slugs = []
        for account, tags in ((me, ["fuzz", "dragons"]), (other, ["fuzz"])):
            article = {"title": f"By {account.username}", "description": "d", "body": "b", "tagList": tags}
            created = self.send("POST", "/api/articles", token=account.token, body={"article": article}, expect=201)
            slugs.append(created["article"]["slug"])
        comment_ids = []
        for account in (me, other):
            comment = {"comment": {"body": f"from {account.username}"}}
            path = "/api/articles/{slug}/comments"
            made = self.send(
                "POST", path, token=account.token, body=comment, path_parameters={"slug": slugs[0]}, expect=201
            )
            comment_ids.append(made["comment"]["id"])
        # Non-trivial viewer flags in responses: I follow them and favorite their article.
        self.send(
            "POST", "/api/profiles/{username}/follow", token=me.token, path_parameters={"username": other.username}
        )
        self.send("POST", "/api/articles/{slug}/favorite", token=me.token, path_parameters={"slug": slugs[1]})
        return Scene(me, other, slugs[0], slugs[1], (comment_ids[0], comment_ids[1]), second, {me.refresh_token})

    def _promote(self, username: str) -> None:
        """Admins are made in the database, as only the command line may (B4)."""
        url = self.database_url

        async def promote() -> None:
            engine = create_engine_for(url)
            try:
                async with engine.begin() as conn:
                    await conn.execute(update(User).where(User.username == username).values(role=Role.ADMIN))
            finally:
                await engine.dispose()

        run_coroutine(promote)


@dataclass
class Stats:
    """What one pass did, for the run's summary (kept on the test report, so it survives pytest-xdist)."""

    name: str
    cases: int = 0
    operations: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)

    def as_property(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cases": self.cases,
            "operations": self.operations,
            "seconds": round(self.seconds, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class Fuzzer:
    """The cases of one operation in one pass: anonymous, or with the scene's token (an admin's on admin
    operations). Made per test, so each operation starts from a fresh scene: nothing left over by another."""

    def __init__(self, seeder: Seeder, *, with_token: bool, stats: Stats) -> None:
        self.seeder = seeder
        self.with_token = with_token
        self.stats = stats
        self._scene: Scene | None = None

    def run(self, case: Case[Operation]) -> None:
        started = time.perf_counter()
        scene = self._scene_for(case.operation)
        self._aim(case, scene)
        headers = {"Authorization": f"Token {scene.me.token}"} if self.with_token else None
        response = case.call(headers=headers, app=self.seeder.app)
        self.stats.cases += 1
        self.stats.statuses[response.status_code] += 1
        self._learn(case, response, scene)
        try:
            case.validate_response(
                response, checks=CHECKS, headers=headers, transport_kwargs={"headers": headers} if headers else None
            )
        finally:
            self.stats.seconds += time.perf_counter() - started

    def _scene_for(self, operation: Operation) -> Scene:
        if self._scene is None:
            self._scene = self.seeder.scene(admin=self.with_token and "admin" in (operation.tags or []))
            self.stats.operations = 1
        return self._scene

    def _aim(self, case: Case[Operation], scene: Scene) -> None:
        """Point path parameters (and, in valid cases, credentials) at the scene. Assigning the containers, not
        editing them in place, makes schemathesis revalidate the case, so a negative case that became valid is
        not held to negative_data_rejection."""
        admin = "admin" in (case.operation.tags or [])
        choices: dict[str, list[str]] = {
            "slug": [scene.my_article, scene.their_article],
            "comment_id": [*(str(c) for c in scene.comments), PAST_BIGINT],
            # An admin deleting or suspending themself ends the token: the operation's other cases would all be 401.
            "username": [scene.other.username] if admin else [scene.other.username, scene.me.username],
            "session_id": [str(scene.my_other_session), PAST_BIGINT],
        }
        if case.path_parameters:
            aimed = dict(case.path_parameters)
            for name in case.path_parameters:
                chosen = pick(case, name, choices.get(name, []))
                if chosen is not None:
                    aimed[name] = chosen
            if aimed != case.path_parameters:
                case.path_parameters = aimed
        meta = case.meta
        if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
            return
        body, issued = case.body, frozenset(scene.issued)
        user = body.get("user")
        if case.operation.label == "POST /api/users/login" and isinstance(user, dict):
            if pick(case, "user", ["mine"]) is not None:
                case.body = {"user": {**user, "email": scene.me.email, "password": PASSWORD}}
        elif case.operation.label == "POST /api/users/refresh" and pick(case, "refreshToken", ["mine"], issued):
            case.body = {**body, "refreshToken": scene.me.refresh_token}

    def _learn(self, case: Case[Operation], response: Response, scene: Scene) -> None:
        """Keep the scene true to what the service now holds, so later cases aim at live values."""
        if response.status_code != 200:
            return
        if case.operation.label == "POST /api/users/refresh":
            scene.me.refresh_token = response.json()["user"]["refreshToken"]
            scene.issued.add(scene.me.refresh_token)
        elif case.operation.label == "PUT /api/articles/{slug}" and case.path_parameters["slug"] == scene.my_article:
            scene.my_article = response.json()["article"]["slug"]  # a new title is a new slug
        elif case.operation.label == "PUT /api/user" and self.with_token:
            user = response.json()["user"]
            scene.me.username, scene.me.email = user["username"], user["email"]
