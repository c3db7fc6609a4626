"""Sessions (contract B5): refresh tokens, logout scopes, the caller's sessions, revocation on the next request."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from jose import jwt
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from typer.testing import CliRunner

from service.core.config import Settings
from service.core.db import Database, utcnow
from service.core.security import token_hash
from service.main import create_app
from service.sessions.models import SpentRefreshToken, UserSession
from tests.helpers import PASSWORD, auth, register, serving


async def login(client: AsyncClient, user: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/users/login", json={"user": {"email": user["email"], "password": PASSWORD}}, headers=headers
    )
    assert response.status_code == 200, response.text
    logged_in: dict[str, Any] = response.json()["user"]
    return logged_in


async def refresh(client: AsyncClient, token: str) -> Any:
    return await client.post("/users/refresh", json={"refreshToken": token})


async def me(client: AsyncClient, token: str) -> int:
    return (await client.get("/user", headers=auth(token))).status_code


INVALID_REFRESH = {"errors": {"refreshToken": ["is invalid"]}}
INVALID_TOKEN = {"errors": {"token": ["is invalid"]}}


async def test_register_and_login_open_a_session_each(client: AsyncClient) -> None:
    registered = await register(client)
    logged_in = await login(client, registered)
    for user in (registered, logged_in):
        assert isinstance(user["refreshToken"], str)
        assert len(user["refreshToken"]) >= 40
        assert jwt.get_unverified_claims(user["token"])["sid"] > 0
    assert jwt.get_unverified_claims(registered["token"])["sid"] != jwt.get_unverified_claims(logged_in["token"])["sid"]
    current = (await client.get("/user", headers=auth(logged_in["token"]))).json()["user"]
    assert "refreshToken" not in current  # shown once, at login, register and refresh
    # /user's token belongs to the caller's session: logging that session out cuts it too
    assert jwt.get_unverified_claims(current["token"])["sid"] == jwt.get_unverified_claims(logged_in["token"])["sid"]


async def test_refresh_rotates_the_token(client: AsyncClient, connection: AsyncConnection) -> None:
    user = await register(client)
    response = await refresh(client, user["refreshToken"])
    assert response.status_code == 200, response.text
    renewed = response.json()["user"]
    assert renewed["username"] == user["username"]
    assert renewed["role"] == "user"
    assert renewed["refreshToken"] != user["refreshToken"]
    assert jwt.get_unverified_claims(renewed["token"])["sid"] == jwt.get_unverified_claims(user["token"])["sid"]
    assert await me(client, renewed["token"]) == 200
    assert await me(client, user["token"]) == 200  # same session: the older access token lives until it expires
    # only hashes are stored
    stored = (await connection.execute(select(UserSession.refresh_hash))).scalars().all()
    assert token_hash(renewed["refreshToken"]) in stored
    assert renewed["refreshToken"] not in stored
    # and the new one refreshes in turn
    again = await refresh(client, renewed["refreshToken"])
    assert again.status_code == 200
    assert again.json()["user"]["refreshToken"] not in (user["refreshToken"], renewed["refreshToken"])


async def test_second_refresh_within_the_grace_period_gets_the_same_successor(client: AsyncClient) -> None:
    user = await register(client)
    first, second = await refresh(client, user["refreshToken"]), await refresh(client, user["refreshToken"])
    assert first.status_code == second.status_code == 200
    assert first.json()["user"]["refreshToken"] == second.json()["user"]["refreshToken"]
    assert await me(client, second.json()["user"]["token"]) == 200  # the session lives on


@pytest.fixture
def no_grace(app: Any, settings: Settings) -> None:
    app.state.settings = settings.model_copy(update={"refresh_grace": timedelta(0)})


@pytest.mark.usefixtures("no_grace")
async def test_reuse_of_a_spent_token_revokes_the_session(client: AsyncClient) -> None:
    user = await register(client)
    other = await login(client, user)  # another device: untouched
    renewed = (await refresh(client, user["refreshToken"])).json()["user"]
    reused = await refresh(client, user["refreshToken"])  # the thief, or the victim, replays the spent token
    assert reused.status_code == 401
    assert reused.json() == INVALID_REFRESH
    assert reused.headers["www-authenticate"]
    # the whole session is gone, for whoever holds it
    assert await me(client, renewed["token"]) == 401
    assert (await refresh(client, renewed["refreshToken"])).json() == INVALID_REFRESH
    assert await me(client, other["token"]) == 200


async def test_unknown_blank_and_malformed_refresh_tokens(client: AsyncClient) -> None:
    assert (await refresh(client, "no-such-token")).json() == INVALID_REFRESH
    assert (await refresh(client, "no-such-token")).status_code == 401
    blank = await client.post("/users/refresh", json={"refreshToken": ""})
    assert blank.status_code == 422
    assert blank.json() == {"errors": {"refreshToken": ["can't be blank"]}}
    missing = await client.post("/users/refresh", json={})
    assert missing.status_code == 422
    assert missing.json() == {"errors": {"refreshToken": ["can't be blank"]}}
    wrong_type = await client.post("/users/refresh", json={"refreshToken": 5})
    assert wrong_type.status_code == 422
    assert wrong_type.json() == {"errors": {"refreshToken": ["is invalid"]}}


async def test_expired_session_refuses_its_tokens(client: AsyncClient, connection: AsyncConnection) -> None:
    user = await register(client)
    sid = jwt.get_unverified_claims(user["token"])["sid"]
    await connection.execute(
        update(UserSession).where(UserSession.id == sid).values(expires_at=utcnow() - timedelta(seconds=1))
    )
    assert await me(client, user["token"]) == 401
    assert (await refresh(client, user["refreshToken"])).json() == INVALID_REFRESH


async def test_token_naming_no_session_is_invalid(client: AsyncClient, settings: Settings) -> None:
    user = await register(client)
    claims = jwt.get_unverified_claims(user["token"])
    for bad in ({**claims, "sid": None}, {k: v for k, v in claims.items() if k != "sid"}, {**claims, "sid": 999999}):
        token = jwt.encode(bad, settings.jwt_secret(), algorithm="HS256")
        response = await client.get("/user", headers=auth(token))
        assert response.status_code == 401
        assert response.json() == INVALID_TOKEN


async def test_session_of_another_user_is_not_borrowed(client: AsyncClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    forged = {**jwt.get_unverified_claims(bob["token"]), "sid": jwt.get_unverified_claims(alice["token"])["sid"]}
    response = await client.get("/user", headers=auth(jwt.encode(forged, settings.jwt_secret(), algorithm="HS256")))
    assert response.status_code == 401


async def test_logout_local_ends_this_session_only(client: AsyncClient) -> None:
    user = await register(client)
    other = await login(client, user)
    response = await client.post("/users/logout", headers=auth(user["token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert await me(client, user["token"]) == 401  # on the very next request
    assert (await refresh(client, user["refreshToken"])).json() == INVALID_REFRESH
    assert await me(client, other["token"]) == 200
    # logging out twice: the token no longer authenticates
    assert (await client.post("/users/logout", headers=auth(user["token"]))).status_code == 401


async def test_logout_others_and_global(client: AsyncClient) -> None:
    user = await register(client)
    second, third = await login(client, user), await login(client, user)
    stranger = await register(client)
    response = await client.post("/users/logout?scope=others", headers=auth(second["token"]))
    assert response.status_code == 204
    assert [await me(client, u["token"]) for u in (user, second, third)] == [401, 200, 401]
    fourth = await login(client, user)
    response = await client.post("/users/logout", params={"scope": "global"}, headers=auth(fourth["token"]))
    assert response.status_code == 204
    assert [await me(client, u["token"]) for u in (second, fourth)] == [401, 401]
    assert await me(client, stranger["token"]) == 200  # only the caller's own sessions


async def test_logout_needs_a_token_and_a_known_scope(client: AsyncClient) -> None:
    anonymous = await client.post("/users/logout")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"errors": {"token": ["is missing"]}}
    user = await register(client)
    wrong = await client.post("/users/logout?scope=everyone", headers=auth(user["token"]))
    assert wrong.status_code == 422
    assert wrong.json() == {"errors": {"scope": ["is invalid"]}}
    assert await me(client, user["token"]) == 200  # nothing was revoked


async def test_password_change_revokes_the_other_sessions(client: AsyncClient) -> None:
    user = await register(client)
    other = await login(client, user)
    response = await client.put("/user", json={"user": {"password": "another-password-1"}}, headers=auth(user["token"]))
    assert response.status_code == 200
    assert await me(client, other["token"]) == 401
    assert (await refresh(client, other["refreshToken"])).json() == INVALID_REFRESH
    assert await me(client, user["token"]) == 200
    assert await me(client, response.json()["user"]["token"]) == 200
    # a change of anything else revokes nothing
    third = await client.post("/users/login", json={"user": {"email": user["email"], "password": "another-password-1"}})
    assert (await client.put("/user", json={"user": {"bio": "hi"}}, headers=auth(user["token"]))).status_code == 200
    assert await me(client, third.json()["user"]["token"]) == 200


async def test_list_and_revoke_own_sessions(client: AsyncClient, count_statements: Any) -> None:
    user = await register(client)
    phone = await login(client, user, **{"User-Agent": "Phone/1.0"})
    stranger = await register(client)
    with count_statements() as counted:
        response = await client.get("/user/sessions", headers=auth(phone["token"]))
    assert response.status_code == 200
    assert counted.total == 2  # the token (session and user in one), the list
    sessions = response.json()["sessions"]
    assert len(sessions) == 2
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1
    assert current[0]["id"] == jwt.get_unverified_claims(phone["token"])["sid"]
    assert current[0]["userAgent"] == "Phone/1.0"
    assert current[0]["ip"] == "127.0.0.1"
    assert set(current[0]) == {"id", "createdAt", "lastUsedAt", "userAgent", "ip", "current"}
    registered_id = next(s["id"] for s in sessions if not s["current"])

    stranger_id = jwt.get_unverified_claims(stranger["token"])["sid"]
    # someone else's, not a number, no such session, past BIGINT (was a 500), non-ASCII digits: all the same 404
    for bad in (stranger_id, "abc", "999999", "9" * 20, "\u0661\u0662"):
        response = await client.delete(f"/user/sessions/{bad}", headers=auth(phone["token"]))
        assert response.status_code == 404
        assert response.json() == {"errors": {"session": ["not found"]}}
    assert await me(client, stranger["token"]) == 200

    response = await client.delete(f"/user/sessions/{registered_id}", headers=auth(phone["token"]))
    assert response.status_code == 204
    assert await me(client, user["token"]) == 401
    listed = (await client.get("/user/sessions", headers=auth(phone["token"]))).json()["sessions"]
    assert [s["id"] for s in listed] == [current[0]["id"]]
    # revoked already: not the caller's active session any more
    again = await client.delete(f"/user/sessions/{registered_id}", headers=auth(phone["token"]))
    assert again.status_code == 404
    assert (await client.get("/user/sessions")).status_code == 401


async def test_last_used_is_recorded_at_most_once_per_interval(
    client: AsyncClient, connection: AsyncConnection
) -> None:
    user = await register(client)
    sid = jwt.get_unverified_claims(user["token"])["sid"]
    long_ago = utcnow() - timedelta(hours=1)
    await connection.execute(update(UserSession).where(UserSession.id == sid).values(last_used_at=long_ago))
    assert await me(client, user["token"]) == 200  # a read route: written in a transaction of its own
    touched = (await connection.execute(select(UserSession.last_used_at).where(UserSession.id == sid))).scalar_one()
    assert touched > long_ago + timedelta(minutes=59)
    assert (await client.put("/user", json={"user": {"bio": "x"}}, headers=auth(user["token"]))).status_code == 200
    again = (await connection.execute(select(UserSession.last_used_at).where(UserSession.id == sid))).scalar_one()
    assert again == touched  # within the interval: no write


async def test_a_fresh_session_costs_one_statement_per_request(client: AsyncClient, count_statements: Any) -> None:
    user = await register(client)
    with count_statements() as counted:
        assert await me(client, user["token"]) == 200
    assert counted.total == 1


async def test_prune_deletes_revoked_and_expired_sessions(
    client: AsyncClient, connection: AsyncConnection, settings: Settings
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from service.sessions import service as sessions_service

    user = await register(client)
    spent = await login(client, user)
    assert (await refresh(client, spent["refreshToken"])).status_code == 200
    await client.post("/users/logout", headers=auth(spent["token"]))
    expired = await login(client, user)
    sid = jwt.get_unverified_claims(expired["token"])["sid"]
    await connection.execute(
        update(UserSession).where(UserSession.id == sid).values(expires_at=utcnow() - timedelta(seconds=1))
    )
    async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint") as session:
        assert await sessions_service.prune(session) == 2
        await session.commit()
    assert (await connection.execute(select(func.count()).select_from(UserSession))).scalar_one() == 1
    assert (await connection.execute(select(func.count()).select_from(SpentRefreshToken))).scalar_one() == 0
    assert await me(client, user["token"]) == 200  # the open session stays


def test_prune_command(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import app as cli
    from service.core import migrations
    from service.core.config import get_settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'prune.db'}"
    migrations.upgrade(url)
    monkeypatch.setenv("SERVICE_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["sessions", "prune"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "pruned: 0 session(s) deleted" in result.output


async def test_racing_refreshes_both_succeed_and_one_row_wins(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    """Two tabs (here eight) refresh with one token at the same moment, on their own committing connections."""
    user = await register(committing_client)
    responses = await asyncio.gather(*(refresh(committing_client, user["refreshToken"]) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    successors = {r.json()["user"]["refreshToken"] for r in responses}
    assert len(successors) == 1
    async with engine.connect() as conn:
        sid = jwt.get_unverified_claims(user["token"])["sid"]
        session = (await conn.execute(select(UserSession).where(UserSession.id == sid))).one()
        assert session.revoked_at is None
        assert session.refresh_hash == token_hash(successors.pop())
        spent = (await conn.execute(select(SpentRefreshToken.session_id))).scalars().all()
        assert spent == [sid]  # exactly one rotation happened


async def test_reuse_revocation_is_committed_although_the_request_fails(
    committing_client: AsyncClient, settings: Settings, engine: AsyncEngine
) -> None:
    from service.core.db import build_database

    strict = serving(create_app(settings.model_copy(update={"refresh_grace": timedelta(0)})), build_database(engine))
    async with AsyncClient(transport=ASGITransport(app=strict), base_url="http://test/api") as client:
        user = await register(client)
        renewed = (await refresh(client, user["refreshToken"])).json()["user"]
        assert (await refresh(client, user["refreshToken"])).status_code == 401
        assert await me(client, renewed["token"]) == 401
    async with engine.connect() as conn:
        revoked = await conn.execute(text("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL"))
        assert revoked.scalar_one() == 1


async def test_revocation_is_seen_by_every_instance(settings: Settings, database: Database) -> None:
    """Two app instances over one database: a logout on one cuts the token on the other at the next request."""
    one, two = (serving(create_app(settings), database) for _ in range(2))
    async with (
        AsyncClient(transport=ASGITransport(app=one), base_url="http://test/api") as first,
        AsyncClient(transport=ASGITransport(app=two), base_url="http://test/api") as second,
    ):
        user = await register(first)
        assert await me(second, user["token"]) == 200
        assert (await first.post("/users/logout", headers=auth(user["token"]))).status_code == 204
        assert await me(second, user["token"]) == 401


async def test_refreshes_are_rate_limited_per_session(
    settings: Settings, database: Database, connection: AsyncConnection
) -> None:
    limited = serving(create_app(settings.model_copy(update={"rate_limit_refresh_session": "2/hour"})), database)
    async with AsyncClient(transport=ASGITransport(app=limited), base_url="http://test/api") as client:
        user = await register(client)
        other = await login(client, user)  # another session: its own count
        token = user["refreshToken"]
        for _ in range(2):
            response = await refresh(client, token)
            assert response.status_code == 200
            token = response.json()["user"]["refreshToken"]
        refused = await refresh(client, token)
        assert refused.status_code == 429
        assert refused.json() == {"errors": {"rate": ["limit exceeded"]}}
        assert int(refused.headers["retry-after"]) >= 1
        # the refused refresh rotated nothing: the token it presented is still the session's current one
        stored = (await connection.execute(select(UserSession.refresh_hash))).scalars().all()
        assert token_hash(token) in stored
        assert (await refresh(client, other["refreshToken"])).status_code == 200


async def test_suspension_revokes_sessions_for_good(client: AsyncClient, session: Any) -> None:
    """Suspended: the tokens stop at once; lifted: the old sessions stay revoked (the user logs in again)."""
    from service.users.models import Role
    from tests.admin.support import change, make_user

    admin = await make_user(client, session, Role.ADMIN)
    user = await register(client)
    assert (await change(client, admin["token"], user["username"], status="suspended")).status_code == 200
    assert await me(client, user["token"]) == 401
    assert (await refresh(client, user["refreshToken"])).json() == INVALID_REFRESH
    assert (await change(client, admin["token"], user["username"], status="active")).status_code == 200
    assert await me(client, user["token"]) == 401
    assert (await refresh(client, user["refreshToken"])).json() == INVALID_REFRESH
    assert await me(client, (await login(client, user))["token"]) == 200
