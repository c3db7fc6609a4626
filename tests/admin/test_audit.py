"""The audit log (contract B4): one entry per admin and moderator action, in the action's own transaction."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession

from service.articles import counters
from service.users.models import Role
from tests.admin.support import audit_entries, change, make_user
from tests.helpers import ISO_TIMESTAMP, auth, create_article, register


async def _comment(client: AsyncClient, token: str, slug: str) -> int:
    response = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=auth(token))
    assert response.status_code == 201, response.text
    comment_id: int = response.json()["comment"]["id"]
    return comment_id


def _brief(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["actor"], e["action"], e["target"]) for e in entries]


async def test_every_admin_action_writes_one_entry_with_its_request_id(
    client: AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    await register(client, "jake")
    headers = {**auth(admin["token"]), "X-Request-ID": "change-jake-1"}
    response = await client.put("/admin/users/jake", json={"user": {"role": "moderator"}}, headers=headers)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "change-jake-1"
    (entry,) = await audit_entries(client, admin["token"])
    assert entry == {
        "id": entry["id"],
        "actor": "root",
        "action": "user.role.moderator",
        "target": "user:jake",
        "createdAt": entry["createdAt"],
        "requestId": "change-jake-1",
    }
    assert isinstance(entry["id"], int)
    assert ISO_TIMESTAMP.match(entry["createdAt"])

    both = await change(client, admin["token"], "jake", role="admin", status="suspended")
    assert both.status_code == 200
    assert (await change(client, admin["token"], "jake", status="active")).status_code == 200
    assert (await client.delete("/admin/users/jake", headers=auth(admin["token"]))).status_code == 204
    entries = await audit_entries(client, admin["token"])
    assert _brief(entries) == [  # newest first
        ("root", "user.delete", "user:jake"),
        ("root", "user.status.active", "user:jake"),
        ("root", "user.status.suspended", "user:jake"),
        ("root", "user.role.admin", "user:jake"),
        ("root", "user.role.moderator", "user:jake"),
    ]
    assert entries[2]["requestId"] == entries[3]["requestId"] == both.headers["X-Request-ID"]  # one request, two
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)


@pytest.mark.parametrize("role", [Role.MODERATOR, Role.ADMIN])
async def test_moderation_of_others_content_is_audited(client: AsyncClient, session: AsyncSession, role: Role) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    staff = await make_user(client, session, role, "staff")
    author = await register(client, "author")
    slug = (await create_article(client, author["token"], title="Spam here"))["slug"]
    other = (await create_article(client, author["token"]))["slug"]
    comment_id = await _comment(client, author["token"], other)
    assert (
        await client.delete(f"/articles/{other}/comments/{comment_id}", headers=auth(staff["token"]))
    ).status_code == 204
    assert (await client.delete(f"/articles/{slug}", headers=auth(staff["token"]))).status_code == 204
    assert _brief(await audit_entries(client, admin["token"])) == [
        ("staff", "article.delete", f"article:{slug}"),
        ("staff", "comment.delete", f"comment:{comment_id}"),
    ]


async def test_authors_deleting_their_own_content_is_not_audited(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    for role in (Role.USER, Role.MODERATOR, Role.ADMIN):
        author = admin if role is Role.ADMIN else await make_user(client, session, role)
        slug = (await create_article(client, author["token"]))["slug"]
        comment_id = await _comment(client, author["token"], slug)
        assert (
            await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=auth(author["token"]))
        ).status_code == 204
        assert (await client.delete(f"/articles/{slug}", headers=auth(author["token"]))).status_code == 204
    assert await audit_entries(client, admin["token"]) == []


async def test_failed_actions_leave_no_entry(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    user = await register(client)
    moderator = await make_user(client, session, Role.MODERATOR)
    slug = (await create_article(client, admin["token"]))["slug"]
    comment_id = await _comment(client, admin["token"], slug)
    failures = [
        (await change(client, admin["token"], "root", role="user"), 409),  # last admin
        (await client.delete("/admin/users/root", headers=auth(admin["token"])), 409),
        (await change(client, admin["token"], "nobody", role="moderator"), 404),
        (await change(client, admin["token"], user["username"], role="god"), 422),
        (await change(client, user["token"], user["username"], role="admin"), 403),  # no self-promotion
        (await client.delete(f"/articles/{slug}", headers=auth(user["token"])), 403),
        (await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=auth(user["token"])), 403),
        (await client.delete(f"/articles/{slug}/comments/{comment_id + 1000}", headers=auth(moderator["token"])), 404),
        (await client.delete("/articles/no-such-article", headers=auth(moderator["token"])), 404),
    ]
    assert [response.status_code for response, _ in failures] == [status for _, status in failures]
    assert await audit_entries(client, admin["token"]) == []


async def test_an_action_failing_after_its_entry_was_written_leaves_no_entry(
    client: AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is added first and the deletion fails after it: the rollback takes both (one transaction)."""
    admin = await make_user(client, session, Role.ADMIN)
    victim = await register(client)
    await create_article(client, victim["token"])

    async def broken(*args: Any) -> None:
        raise RuntimeError("the database went away mid-way")

    monkeypatch.setattr(counters, "user_removed", broken)
    response = await client.delete(f"/admin/users/{victim['username']}", headers=auth(admin["token"]))
    assert response.status_code == 500
    assert response.json() == {"errors": {"server": ["internal error"]}}
    monkeypatch.undo()
    assert await audit_entries(client, admin["token"]) == []
    assert (await client.get("/user", headers=auth(victim["token"]))).status_code == 200  # nothing was deleted


async def test_audit_log_pages_newest_first_with_exact_count(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    names = [(await register(client))["username"] for _ in range(3)]
    for name in names:
        assert (await change(client, admin["token"], name, role="moderator")).status_code == 200
    headers = auth(admin["token"])
    page = (await client.get("/admin/audit-log", params={"limit": 2, "offset": 1}, headers=headers)).json()
    assert page["entriesCount"] == 3
    assert [e["target"] for e in page["entries"]] == [f"user:{names[1]}", f"user:{names[0]}"]
    assert (await client.get("/admin/audit-log", params={"offset": 3}, headers=headers)).json() == {
        "entries": [],
        "entriesCount": 3,
    }
    default = (await client.get("/admin/audit-log", headers=headers)).json()
    assert len(default["entries"]) == 3


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"limit": 0}, {"limit": ["must be greater than or equal to 1"]}),
        ({"limit": 101}, {"limit": ["must be less than or equal to 100"]}),
        ({"offset": -1}, {"offset": ["must be greater than or equal to 0"]}),
        ({"offset": "x"}, {"offset": ["is invalid"]}),
    ],
)
async def test_audit_log_invalid_paging_is_422(
    client: AsyncClient, session: AsyncSession, params: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    response = await client.get("/admin/audit-log", params=params, headers=auth(admin["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": errors}


async def test_entries_outlive_their_actor(client: AsyncClient, session: AsyncSession) -> None:
    root = await make_user(client, session, Role.ADMIN, "root")
    departing = await make_user(client, session, Role.ADMIN, "departing")
    target = await register(client, "target")
    assert (await change(client, departing["token"], target["username"], role="moderator")).status_code == 200
    assert (await client.delete("/admin/users/departing", headers=auth(root["token"]))).status_code == 204
    assert _brief(await audit_entries(client, root["token"])) == [
        ("root", "user.delete", "user:departing"),
        ("departing", "user.role.moderator", "user:target"),
    ]
