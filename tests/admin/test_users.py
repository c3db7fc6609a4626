"""The admin API's user endpoints (contract B4): listing, role and status changes, deletion, and their errors."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.articles import counters
from service.users.models import Role, UserStatus
from tests.admin.support import account, change, make_user, set_account
from tests.helpers import ISO_TIMESTAMP, PASSWORD, auth, create_article, favorite, follow, register

ADMIN_ROUTES = [
    ("GET", "/admin/users", None),
    ("PUT", "/admin/users/nobody-at-all", {"user": {"role": "admin"}}),
    ("DELETE", "/admin/users/nobody-at-all", None),
    ("GET", "/admin/audit-log", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_without_token_are_401_first(client: AsyncClient, method: str, path: str, body: Any) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is missing"]}}
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("role", [Role.USER, Role.MODERATOR])
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_non_admins_before_anything_else(
    client: AsyncClient, session: AsyncSession, role: Role, method: str, path: str, body: Any
) -> None:
    caller = await make_user(client, session, role)
    response = await client.request(method, path, json=body, headers=auth(caller["token"]))
    assert response.status_code == 403
    assert response.json() == {"errors": {"role": ["forbidden"]}}
    invalid = await client.put(
        "/admin/users/nobody-at-all", json={"user": {"role": "god"}}, headers=auth(caller["token"])
    )
    assert invalid.status_code == 403  # the role is checked before the body and the path


async def test_invalid_token_on_admin_route_is_401(client: AsyncClient) -> None:
    response = await client.get("/admin/users", headers=auth("not-a-token"))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


# ---------------------------------------------------------------------------------------------------------------
# Listing


async def test_list_users_newest_first_with_exact_count(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    names = [(await register(client, f"member{i}"))["username"] for i in range(3)]
    response = await client.get("/admin/users", headers=auth(admin["token"]))
    assert response.status_code == 200
    body = response.json()
    assert body["usersCount"] == 4
    assert [u["username"] for u in body["users"]] == [*reversed(names), "root"]
    first = body["users"][0]
    assert set(first) == {"username", "email", "role", "status", "createdAt"}
    assert first == {
        "username": "member2",
        "email": "member2@example.com",
        "role": "user",
        "status": "active",
        "createdAt": first["createdAt"],
    }
    assert ISO_TIMESTAMP.match(first["createdAt"])
    page = await client.get("/admin/users", params={"limit": 2, "offset": 1}, headers=auth(admin["token"]))
    assert [u["username"] for u in page.json()["users"]] == ["member1", "member0"]
    assert page.json()["usersCount"] == 4
    past = await client.get("/admin/users", params={"offset": 10}, headers=auth(admin["token"]))
    assert past.json() == {"users": [], "usersCount": 4}


async def test_list_users_search_and_filters(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    await register(client, "Jake_Blue")
    await register(client, "jakeXblue")
    await register(client, "ann")
    await make_user(client, session, Role.MODERATOR, "mod")
    await set_account(session, "ann", status=UserStatus.SUSPENDED)

    async def names(**params: Any) -> tuple[list[str], int]:
        response = await client.get("/admin/users", params=params, headers=auth(admin["token"]))
        assert response.status_code == 200, response.text
        return sorted(u["username"] for u in response.json()["users"]), response.json()["usersCount"]

    assert await names(search="JAKE") == (["Jake_Blue", "jakeXblue"], 2)  # any case
    assert await names(search="e_b") == (["Jake_Blue"], 1)  # "_" matches only itself
    assert await names(search="%") == ([], 0)
    assert await names(search="ann@EXAMPLE") == (["ann"], 1)  # an e-mail fragment
    assert await names(role="moderator") == (["mod"], 1)
    assert await names(role="admin") == (["root"], 1)
    assert await names(status="suspended") == (["ann"], 1)
    assert await names(search="a", status="active", role="user") == (["Jake_Blue", "jakeXblue"], 2)
    assert await names(search="", role="", status="") == (["Jake_Blue", "ann", "jakeXblue", "mod", "root"], 5)
    assert await names(search="\x00") == ([], 0)


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"limit": 0}, {"limit": ["must be greater than or equal to 1"]}),
        ({"limit": 101}, {"limit": ["must be less than or equal to 100"]}),
        ({"offset": -1}, {"offset": ["must be greater than or equal to 0"]}),
        ({"limit": "ten"}, {"limit": ["is invalid"]}),
        ({"role": "god"}, {"role": ["is invalid"]}),
        ({"status": "asleep"}, {"status": ["is invalid"]}),
    ],
)
async def test_list_users_invalid_parameters_are_422(
    client: AsyncClient, session: AsyncSession, params: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    response = await client.get("/admin/users", params=params, headers=auth(admin["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": errors}


@pytest.mark.parametrize("path", ["/admin/users", "/admin/audit-log"])
async def test_admin_lists_cost_the_same_for_any_page_size(
    client: AsyncClient, session: AsyncSession, count_statements: Any, path: str
) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    for _ in range(5):
        user = await register(client)
        assert (await change(client, admin["token"], user["username"], role="moderator")).status_code == 200
    counts = []
    for limit in (1, 100):
        with count_statements() as counter:
            response = await client.get(path, params={"limit": limit}, headers=auth(admin["token"]))
        assert response.status_code == 200
        counts.append(counter.total)
    # the caller (with its session), the total, the page: whatever the page size
    assert counts == [3, 3]


# ---------------------------------------------------------------------------------------------------------------
# Changing a role or a status


async def test_change_role_and_status(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    jake = await register(client, "jake")
    response = await change(client, admin["token"], "JAKE", role="moderator")  # any case
    assert response.status_code == 200
    user = response.json()["user"]
    assert user == {
        "username": "jake",
        "email": "jake@example.com",
        "role": "moderator",
        "status": "active",
        "createdAt": user["createdAt"],
    }
    assert (await client.get("/user", headers=auth(jake["token"]))).json()["user"]["role"] == "moderator"
    both = await change(client, admin["token"], "jake", role="admin", status="suspended")
    assert both.status_code == 200
    assert (both.json()["user"]["role"], both.json()["user"]["status"]) == ("admin", "suspended")
    assert await account(client, admin["token"], "jake") == both.json()["user"]
    back = await change(client, admin["token"], "jake", status="active")
    assert back.json()["user"]["status"] == "active"
    # the suspension revoked jake's sessions: lifting it revives none of them, a new login works
    assert (await client.get("/user", headers=auth(jake["token"]))).status_code == 401
    login = await client.post("/users/login", json={"user": {"email": jake["email"], "password": PASSWORD}})
    assert (await client.get("/user", headers=auth(login.json()["user"]["token"]))).status_code == 200


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"user": {"role": "god"}}, {"role": ["is invalid"]}),
        ({"user": {"status": "asleep"}}, {"status": ["is invalid"]}),
        ({"user": {"role": None}}, {"role": ["can't be blank"]}),
        ({"user": {"status": ""}}, {"status": ["can't be blank"]}),
        ({"user": {"role": 3}}, {"role": ["is invalid"]}),
        ({"user": {}}, {"user": ["can't be blank"]}),
        ({"user": {"bio": "x"}}, {"user": ["can't be blank"]}),
        ({}, {"user": ["can't be blank"]}),
    ],
)
async def test_change_with_invalid_body_is_422(
    client: AsyncClient, session: AsyncSession, body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    target = await register(client)
    response = await client.put(f"/admin/users/{target['username']}", json=body, headers=auth(admin["token"]))
    assert response.status_code == 422
    assert response.json() == {"errors": errors}


@pytest.mark.parametrize("username", ["nobody", "no%00body"])  # %00: text no row can hold
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_unknown_username_is_404_user(
    client: AsyncClient, session: AsyncSession, method: str, username: str
) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    body = {"user": {"role": "moderator"}} if method == "PUT" else None
    response = await client.request(method, f"/admin/users/{username}", json=body, headers=auth(admin["token"]))
    assert response.status_code == 404
    assert response.json() == {"errors": {"user": ["not found"]}}


async def test_setting_the_current_value_changes_nothing(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    target = await register(client)
    response = await change(client, admin["token"], target["username"], role="user", status="active")
    assert response.status_code == 200
    assert (response.json()["user"]["role"], response.json()["user"]["status"]) == ("user", "active")
    # the only admin setting itself to admin is no demotion
    assert (await change(client, admin["token"], "root", role="admin")).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# The last admin


LAST_ADMIN = {"errors": {"role": ["last admin"]}}


@pytest.mark.parametrize("fields", [{"role": "moderator"}, {"role": "user"}, {"status": "suspended"}])
async def test_last_admin_cannot_be_demoted_or_suspended(
    client: AsyncClient, session: AsyncSession, fields: dict[str, str]
) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    response = await change(client, admin["token"], "root", **fields)
    assert response.status_code == 409
    assert response.json() == LAST_ADMIN
    assert await account(client, admin["token"], "root") | {"createdAt": None} == {
        "username": "root",
        "email": "root@example.com",
        "role": "admin",
        "status": "active",
        "createdAt": None,
    }


async def test_last_admin_cannot_be_deleted(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    response = await client.delete("/admin/users/root", headers=auth(admin["token"]))
    assert response.status_code == 409
    assert response.json() == LAST_ADMIN
    assert (await client.get("/user", headers=auth(admin["token"]))).status_code == 200


async def test_a_suspended_admin_does_not_count(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    await make_user(client, session, Role.ADMIN, "dormant")
    await set_account(session, "dormant", status=UserStatus.SUSPENDED)
    assert (await change(client, admin["token"], "root", role="user")).json() == LAST_ADMIN
    # reactivating the suspended admin (no demotion) is fine, and then root may step down
    assert (await change(client, admin["token"], "dormant", status="active")).status_code == 200
    assert (await change(client, admin["token"], "root", role="user")).status_code == 200
    assert (await client.get("/admin/users", headers=auth(admin["token"]))).status_code == 403  # next request


async def test_with_two_admins_one_may_go(client: AsyncClient, session: AsyncSession) -> None:
    root = await make_user(client, session, Role.ADMIN, "root")
    await make_user(client, session, Role.ADMIN, "second")
    assert (await client.delete("/admin/users/second", headers=auth(root["token"]))).status_code == 204
    assert (await change(client, root["token"], "root", role="user")).json() == LAST_ADMIN
    # a suspended admin may be deleted or demoted: it is not the last *active* one
    await make_user(client, session, Role.ADMIN, "third")
    await set_account(session, "third", status=UserStatus.SUSPENDED)
    assert (await change(client, root["token"], "third", role="user")).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Demotion and suspension apply on the next request


async def test_demoted_moderator_can_no_longer_delete_others_articles(
    client: AsyncClient, session: AsyncSession
) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    moderator = await make_user(client, session, Role.MODERATOR)
    author = await register(client)
    first = (await create_article(client, author["token"]))["slug"]
    second = (await create_article(client, author["token"]))["slug"]
    assert (await client.delete(f"/articles/{first}", headers=auth(moderator["token"]))).status_code == 204
    assert (await change(client, admin["token"], moderator["username"], role="user")).status_code == 200
    response = await client.delete(f"/articles/{second}", headers=auth(moderator["token"]))
    assert response.status_code == 403
    assert response.json() == {"errors": {"article": ["forbidden"]}}
    assert (await client.get(f"/articles/{second}")).status_code == 200


async def test_demoted_admin_loses_the_admin_api_at_once(client: AsyncClient, session: AsyncSession) -> None:
    root = await make_user(client, session, Role.ADMIN)
    other = await make_user(client, session, Role.ADMIN)
    assert (await client.get("/admin/users", headers=auth(other["token"]))).status_code == 200
    assert (await change(client, root["token"], other["username"], role="moderator")).status_code == 200
    response = await client.get("/admin/audit-log", headers=auth(other["token"]))
    assert response.status_code == 403
    assert response.json() == {"errors": {"role": ["forbidden"]}}


async def test_suspension_cuts_tokens_and_login_until_reactivated(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    jake = await register(client, "jake")
    assert (await change(client, admin["token"], "jake", status="suspended")).status_code == 200
    response = await client.get("/user", headers=auth(jake["token"]))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}
    login = await client.post("/users/login", json={"user": {"email": "jake@example.com", "password": PASSWORD}})
    assert login.status_code == 403
    assert login.json() == {"errors": {"account": ["is suspended"]}}
    assert (await change(client, admin["token"], "jake", status="active")).status_code == 200
    again = await client.post("/users/login", json={"user": {"email": "jake@example.com", "password": PASSWORD}})
    assert again.status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Deleting a user


async def test_deleting_a_user_removes_their_content_and_keeps_every_counter_exact(
    client: AsyncClient, session: AsyncSession, connection: AsyncConnection
) -> None:
    admin = await make_user(client, session, Role.ADMIN, "root")
    gone = await register(client, "gone")
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    # gone's articles: tagged, favorited by alice and bob (and by gone itself), commented on by alice
    own = [
        (await create_article(client, gone["token"], tagList=["shared", "only-gone"]))["slug"],
        (await create_article(client, gone["token"], tagList=["shared"]))["slug"],
    ]
    for slug in own:
        await favorite(client, alice["token"], slug)
    await favorite(client, bob["token"], own[0])
    await favorite(client, gone["token"], own[0])
    comment = await client.post(
        f"/articles/{own[0]}/comments", json={"comment": {"body": "nice"}}, headers=auth(alice["token"])
    )
    assert comment.status_code == 201
    # alice's article: tagged "shared", favorited by gone and bob, commented on by gone
    kept = (await create_article(client, alice["token"], tagList=["shared"]))["slug"]
    await favorite(client, gone["token"], kept)
    await favorite(client, bob["token"], kept)
    gone_comment = await client.post(
        f"/articles/{kept}/comments", json={"comment": {"body": "mine"}}, headers=auth(gone["token"])
    )
    assert gone_comment.status_code == 201
    await follow(client, gone["token"], "alice")
    await follow(client, alice["token"], "gone")
    assert await counters.differences(connection) == []

    response = await client.delete("/admin/users/gone", headers=auth(admin["token"]))
    assert response.status_code == 204
    assert response.content == b""

    assert await counters.differences(connection) == []
    assert (await client.get("/user", headers=auth(gone["token"]))).json() == {"errors": {"token": ["is invalid"]}}
    assert (await client.get("/profiles/gone")).status_code == 404
    for slug in own:
        assert (await client.get(f"/articles/{slug}")).status_code == 404
    listing = (await client.get("/articles")).json()
    assert (listing["articlesCount"], [a["slug"] for a in listing["articles"]]) == (1, [kept])
    article = (await client.get(f"/articles/{kept}", headers=auth(alice["token"]))).json()["article"]
    assert article["favoritesCount"] == 1  # bob's favorite stays, gone's went
    comments = (await client.get(f"/articles/{kept}/comments")).json()["comments"]
    assert comments == []
    assert (await client.get("/tags")).json() == {"tags": ["shared"]}
    tagged = (await client.get("/articles", params={"tag": "shared"})).json()
    assert tagged["articlesCount"] == 1
    assert (await client.get("/articles", params={"tag": "only-gone"})).json() == {"articles": [], "articlesCount": 0}
    favorited_by_alice = (await client.get("/articles", params={"favorited": "alice"})).json()
    assert favorited_by_alice == {"articles": [], "articlesCount": 0}
    favorited_by_bob = (await client.get("/articles", params={"favorited": "bob"})).json()
    assert (favorited_by_bob["articlesCount"], [a["slug"] for a in favorited_by_bob["articles"]]) == (1, [kept])
    assert (await client.get("/articles", params={"author": "gone"})).json()["articlesCount"] == 0
    profile = (await client.get("/profiles/alice", headers=auth(alice["token"]))).json()
    assert profile["profile"]["following"] is False
    assert (await client.get("/articles/feed", headers=auth(alice["token"]))).json()["articlesCount"] == 0
    users = (await client.get("/admin/users", headers=auth(admin["token"]))).json()
    assert sorted(u["username"] for u in users["users"]) == ["alice", "bob", "root"]
    assert users["usersCount"] == 3
    # the name is free again
    assert (await register(client, "gone"))["username"] == "gone"


async def test_deleting_a_user_without_content(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    quiet = await register(client)
    response = await client.delete(f"/admin/users/{quiet['username'].upper()}", headers=auth(admin["token"]))
    assert response.status_code == 204
    assert (await client.get("/user", headers=auth(quiet["token"]))).status_code == 401
