"""The last-admin rule under truly concurrent requests (PostgreSQL, each request committing on its own connection).

Without the admin-changes lock both requests of each race would count the other admin as still active and both
would commit, leaving no admin at all.
"""

import asyncio

from httpx import AsyncClient, Response
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.users.models import Role, User, UserStatus
from tests.admin.support import change
from tests.helpers import auth, register

ROUNDS = 5


async def _only_admins(engine: AsyncEngine, *usernames: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(User).where(User.role == Role.ADMIN).values(role=Role.USER))
        await conn.execute(update(User).where(User.username.in_(usernames)).values(role=Role.ADMIN))


async def _active_admins(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).where(User.role == Role.ADMIN, User.status == UserStatus.ACTIVE)
        return int((await conn.execute(stmt)).scalar_one())


def _statuses(responses: list[Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


async def test_two_admins_demoting_each_other_at_once_leave_one(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    client = committing_client
    for _ in range(ROUNDS):
        a, b = await register(client), await register(client)
        await _only_admins(engine, a["username"], b["username"])
        responses = list(
            await asyncio.gather(
                change(client, a["token"], b["username"], role="user"),
                change(client, b["token"], a["username"], role="user"),
            )
        )
        # The loser was demoted before its own change could apply (it re-reads itself under the lock): 403.
        assert _statuses(responses) == [200, 403], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 403)
        assert loser.json() == {"errors": {"role": ["forbidden"]}}
        assert await _active_admins(engine) == 1


async def test_two_admins_demoting_themselves_at_once_leave_one(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    client = committing_client
    for _ in range(ROUNDS):
        a, b = await register(client), await register(client)
        await _only_admins(engine, a["username"], b["username"])
        responses = list(
            await asyncio.gather(
                change(client, a["token"], a["username"], role="moderator"),
                change(client, b["token"], b["username"], status="suspended"),
            )
        )
        # The loser is still an admin, but the only active one left: 409.
        assert _statuses(responses) == [200, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409)
        assert loser.json() == {"errors": {"role": ["last admin"]}}
        assert await _active_admins(engine) == 1


async def test_two_admins_deleting_each_other_at_once_leave_one(
    committing_client: AsyncClient, engine: AsyncEngine
) -> None:
    client = committing_client
    for _ in range(ROUNDS):
        a, b = await register(client), await register(client)
        await _only_admins(engine, a["username"], b["username"])
        responses = list(
            await asyncio.gather(
                client.delete(f"/admin/users/{b['username']}", headers=auth(a["token"])),
                client.delete(f"/admin/users/{a['username']}", headers=auth(b["token"])),
            )
        )
        # The loser's account is gone by the time its request acts (or authenticates): its token is invalid.
        assert _statuses(responses) == [204, 401], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 401)
        assert loser.json() == {"errors": {"token": ["is invalid"]}}
        assert await _active_admins(engine) == 1
