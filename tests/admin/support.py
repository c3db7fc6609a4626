"""Test helpers for roles: users with a role (set in the database, as only the CLI or the admin API may), and
small clients of the admin API."""

from typing import Any

from httpx import AsyncClient, Response
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from service.users.models import Role, User, UserStatus
from tests.helpers import auth, register


async def set_account(
    session: AsyncSession, username: str, *, role: Role | None = None, status: UserStatus | None = None
) -> None:
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = role
    if status is not None:
        values["status"] = status
    await session.execute(update(User).where(User.username == username).values(values))
    await session.commit()


async def make_user(
    client: AsyncClient, session: AsyncSession, role: Role = Role.USER, username: str | None = None
) -> dict[str, Any]:
    """Register over HTTP, then give the account ``role`` directly in the database."""
    user = await register(client, username)
    if role is not Role.USER:
        await set_account(session, user["username"], role=role)
        user["role"] = role.value
    return user


async def change(client: AsyncClient, token: str, username: str, **fields: Any) -> Response:
    return await client.put(f"/admin/users/{username}", json={"user": fields}, headers=auth(token))


async def account(client: AsyncClient, admin_token: str, username: str) -> dict[str, Any]:
    """The user as the admin API lists them."""
    response = await client.get("/admin/users", params={"search": username}, headers=auth(admin_token))
    assert response.status_code == 200, response.text
    (found,) = [u for u in response.json()["users"] if u["username"] == username]
    return dict(found)


async def audit_entries(client: AsyncClient, admin_token: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/admin/audit-log", params={"limit": 100, **params}, headers=auth(admin_token))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries
