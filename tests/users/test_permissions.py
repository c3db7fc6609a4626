"""The permission table (users/permissions.py), cell by cell over HTTP, and the README's copy of it.

The cells are generated from ``PERMISSIONS`` itself: change a cell there and this file tests the new rule. Each
action has one probe that tries it as the actor and reports what the server answered and whether the action took
effect, so a refusal is checked to change nothing.
"""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from service.users.models import Role
from service.users.permissions import PERMISSIONS, Action, can, can_on, require
from tests.admin.support import change, make_user
from tests.helpers import auth, create_article, register

README = Path(__file__).resolve().parents[2] / "README.md"

Outcome = tuple[Response, bool]  # the answer, and whether the action took effect


async def _comment(client: AsyncClient, token: str, slug: str) -> int:
    response = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=auth(token))
    assert response.status_code == 201, response.text
    comment_id: int = response.json()["comment"]["id"]
    return comment_id


async def _edit_article(client: AsyncClient, actor: dict[str, Any], author: dict[str, Any]) -> Outcome:
    slug = (await create_article(client, author["token"]))["slug"]
    response = await client.put(f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=auth(actor["token"]))
    body = (await client.get(f"/articles/{slug}")).json()["article"]["body"]
    return response, body == "edited"


async def _delete_article(client: AsyncClient, actor: dict[str, Any], author: dict[str, Any]) -> Outcome:
    slug = (await create_article(client, author["token"]))["slug"]
    response = await client.delete(f"/articles/{slug}", headers=auth(actor["token"]))
    return response, (await client.get(f"/articles/{slug}")).status_code == 404


async def _delete_comment(client: AsyncClient, actor: dict[str, Any], author: dict[str, Any]) -> Outcome:
    slug = (await create_article(client, (await register(client))["token"]))["slug"]
    comment_id = await _comment(client, author["token"], slug)
    response = await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=auth(actor["token"]))
    remaining = [c["id"] for c in (await client.get(f"/articles/{slug}/comments")).json()["comments"]]
    return response, comment_id not in remaining


async def edit_own_article(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _edit_article(client, actor, actor)


async def edit_any_article(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _edit_article(client, actor, await register(client))


async def delete_own_article(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _delete_article(client, actor, actor)


async def delete_any_article(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _delete_article(client, actor, await register(client))


async def delete_own_comment(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _delete_comment(client, actor, actor)


async def delete_any_comment(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    return await _delete_comment(client, actor, await register(client))


async def list_users(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    response = await client.get("/admin/users", headers=auth(actor["token"]))
    return response, response.status_code == 200 and "users" in response.json()


async def change_role(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    target = await register(client)
    response = await change(client, actor["token"], target["username"], role="moderator")
    role = (await client.get("/user", headers=auth(target["token"]))).json()["user"]["role"]
    return response, role == "moderator"


async def change_status(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    target = await register(client)
    response = await change(client, actor["token"], target["username"], status="suspended")
    return response, (await client.get("/user", headers=auth(target["token"]))).status_code == 401


async def delete_user(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    target = await register(client)
    response = await client.delete(f"/admin/users/{target['username']}", headers=auth(actor["token"]))
    return response, (await client.get(f"/profiles/{target['username']}")).status_code == 404


async def read_audit_log(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    response = await client.get("/admin/audit-log", headers=auth(actor["token"]))
    return response, response.status_code == 200 and "entries" in response.json()


async def manage_outbox(client: AsyncClient, session: AsyncSession, actor: dict[str, Any]) -> Outcome:
    response = await client.get("/admin/outbox", headers=auth(actor["token"]))
    return response, response.status_code == 200 and "deadLetters" in response.json()


@dataclass(frozen=True)
class Probe:
    run: Callable[[AsyncClient, AsyncSession, dict[str, Any]], Awaitable[Outcome]]
    success: int
    refusal: dict[str, Any]


ARTICLE_FORBIDDEN = {"errors": {"article": ["forbidden"]}}
COMMENT_FORBIDDEN = {"errors": {"comment": ["forbidden"]}}
ROLE_FORBIDDEN = {"errors": {"role": ["forbidden"]}}

PROBES: dict[Action, Probe] = {
    Action.EDIT_OWN_ARTICLE: Probe(edit_own_article, 200, ARTICLE_FORBIDDEN),
    Action.EDIT_ANY_ARTICLE: Probe(edit_any_article, 200, ARTICLE_FORBIDDEN),
    Action.DELETE_OWN_ARTICLE: Probe(delete_own_article, 204, ARTICLE_FORBIDDEN),
    Action.DELETE_ANY_ARTICLE: Probe(delete_any_article, 204, ARTICLE_FORBIDDEN),
    Action.DELETE_OWN_COMMENT: Probe(delete_own_comment, 204, COMMENT_FORBIDDEN),
    Action.DELETE_ANY_COMMENT: Probe(delete_any_comment, 204, COMMENT_FORBIDDEN),
    Action.LIST_USERS: Probe(list_users, 200, ROLE_FORBIDDEN),
    Action.CHANGE_ROLE: Probe(change_role, 200, ROLE_FORBIDDEN),
    Action.CHANGE_STATUS: Probe(change_status, 200, ROLE_FORBIDDEN),
    Action.DELETE_USER: Probe(delete_user, 204, ROLE_FORBIDDEN),
    Action.READ_AUDIT_LOG: Probe(read_audit_log, 200, ROLE_FORBIDDEN),
    Action.MANAGE_OUTBOX: Probe(manage_outbox, 200, ROLE_FORBIDDEN),
}

CELLS = [(role, action) for action in Action for role in Role]


def test_every_action_has_a_probe() -> None:
    assert set(PROBES) == set(Action) == set(PERMISSIONS)


@pytest.mark.parametrize(("role", "action"), CELLS, ids=[f"{r.value}-{a.value}" for r, a in CELLS])
async def test_permission_cell(client: AsyncClient, session: AsyncSession, role: Role, action: Action) -> None:
    actor = await make_user(client, session, role)
    probe = PROBES[action]
    response, took_effect = await probe.run(client, session, actor)
    if role in PERMISSIONS[action]:
        assert response.status_code == probe.success, response.text
        assert took_effect
    else:
        assert response.status_code == 403, response.text
        assert response.json() == probe.refusal
        assert not took_effect


@dataclass(frozen=True)
class _Caller:
    id: int
    role: Role


@pytest.mark.parametrize(("role", "action"), CELLS)
def test_can_reads_the_table(role: Role, action: Action) -> None:
    assert can(_Caller(1, role), action) is (role in PERMISSIONS[action])


def test_can_on_picks_own_or_other_by_author() -> None:
    user = _Caller(7, Role.USER)
    assert can_on(user, 7, own=Action.DELETE_OWN_ARTICLE, other=Action.DELETE_ANY_ARTICLE)
    assert not can_on(user, 8, own=Action.DELETE_OWN_ARTICLE, other=Action.DELETE_ANY_ARTICLE)


def test_require_needs_an_action() -> None:
    with pytest.raises(ValueError, match="at least one"):
        require()


def _readme_matrix() -> dict[str, dict[str, bool]]:
    """The table under "## Roles and permissions": action (in backticks) -> role -> yes/no."""
    text = README.read_text()
    section = text.split("\n## Roles and permissions\n", 1)[1].split("\n## ", 1)[0]
    matrix: dict[str, dict[str, bool]] = {}
    header: list[str] | None = None
    for line in section.splitlines():
        if not line.startswith("|"):
            if matrix:
                break  # the first table only
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells) <= {"---", ":---", "---:", ":---:"} or re.fullmatch(r"[-:| ]+", line):
            continue
        name = re.fullmatch(r"`([a-z_]+)`", cells[0])
        assert name, f"first cell of a matrix row names the action in backticks: {line!r}"
        row = {}
        for role in Role:
            value = cells[header.index(role.value)]
            assert value in ("yes", "no"), f"{name.group(1)}/{role.value}: {value!r}"
            row[role.value] = value == "yes"
        matrix[name.group(1)] = row
    return matrix


def test_readme_matrix_matches_the_table_cell_for_cell() -> None:
    expected = {action.value: {role.value: role in roles for role in Role} for action, roles in PERMISSIONS.items()}
    assert _readme_matrix() == expected
