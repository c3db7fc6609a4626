"""No request body outside the admin API can set ``role`` or ``status`` (contract B4): every write endpoint is sent
both keys, at the top level and inside its envelope, and the account is unchanged afterwards. The list of write
endpoints is read from the app itself, so a new one fails here until it is covered."""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncSession

from service.users.models import Role
from tests.admin.support import account, make_user
from tests.helpers import PASSWORD, article_payload, auth, create_article, register

SNEAKY = {"role": "admin", "status": "suspended"}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _sneaky(envelope: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(SNEAKY)
    if envelope is not None:
        body[envelope] = {**fields, **SNEAKY}
    else:
        body.update(fields)
    return body


class Context:
    def __init__(self, client: AsyncClient, user: dict[str, Any]) -> None:
        self.client = client
        self.user = user
        self.headers = auth(user["token"])
        self.new_accounts: list[dict[str, Any]] = []

    async def login(self) -> dict[str, Any]:
        response = await self.client.post(
            "/users/login", json={"user": {"email": self.user["email"], "password": PASSWORD}}
        )
        assert response.status_code == 200, response.text
        user: dict[str, Any] = response.json()["user"]
        return user


Probe = Callable[[Context], Awaitable[Response]]


async def _register(ctx: Context) -> Response:
    body = _sneaky("user", username="sneaky", email="sneaky@example.com", password=PASSWORD)
    response = await ctx.client.post("/users", json=body)
    ctx.new_accounts.append(response.json()["user"])
    return response


async def _login(ctx: Context) -> Response:
    return await ctx.client.post("/users/login", json=_sneaky("user", email=ctx.user["email"], password=PASSWORD))


async def _refresh(ctx: Context) -> Response:
    other = await ctx.login()
    body = _sneaky("user", **{"refreshToken": other["refreshToken"]})
    body["refreshToken"] = other["refreshToken"]
    return await ctx.client.post("/users/refresh", json=body)


async def _logout(ctx: Context) -> Response:
    other = await ctx.login()  # its own session: the main one stays
    return await ctx.client.post("/users/logout", json=_sneaky("user"), headers=auth(other["token"]))


async def _revoke_session(ctx: Context) -> Response:
    other = await ctx.login()
    sessions = (await ctx.client.get("/user/sessions", headers=auth(other["token"]))).json()["sessions"]
    (current,) = [s for s in sessions if s["current"]]
    return await ctx.client.request(
        "DELETE", f"/user/sessions/{current['id']}", json=_sneaky("user"), headers=ctx.headers
    )


async def _verify(ctx: Context) -> Response:
    return await ctx.client.post("/users/verify", json=_sneaky(token="x" * 43))  # no account is reached: 422


async def _resend_verification(ctx: Context) -> Response:
    return await ctx.client.post("/users/verify/resend", json=_sneaky("user"), headers=ctx.headers)


async def _password_reset(ctx: Context) -> Response:
    return await ctx.client.post("/users/password-reset", json=_sneaky(email=ctx.user["email"]))


async def _password_reset_confirm(ctx: Context) -> Response:
    return await ctx.client.post(
        "/users/password-reset/confirm", json=_sneaky(token="x" * 43, password=PASSWORD)
    )  # an unknown token: 422, and the caller's sessions are kept for the probes after it


async def _update_user(ctx: Context) -> Response:
    return await ctx.client.put("/user", json=_sneaky("user", bio="hi"), headers=ctx.headers)


async def _create_article(ctx: Context) -> Response:
    return await ctx.client.post("/articles", json=_sneaky("article", **article_payload()), headers=ctx.headers)


async def _article(ctx: Context) -> str:
    slug: str = (await create_article(ctx.client, ctx.user["token"]))["slug"]
    return slug


async def _update_article(ctx: Context) -> Response:
    slug = await _article(ctx)
    return await ctx.client.put(f"/articles/{slug}", json=_sneaky("article", body="new"), headers=ctx.headers)


async def _delete_article(ctx: Context) -> Response:
    slug = await _article(ctx)
    return await ctx.client.request("DELETE", f"/articles/{slug}", json=_sneaky("article"), headers=ctx.headers)


async def _favorite(ctx: Context) -> Response:
    slug = await _article(ctx)
    return await ctx.client.post(f"/articles/{slug}/favorite", json=_sneaky("article"), headers=ctx.headers)


async def _unfavorite(ctx: Context) -> Response:
    slug = await _article(ctx)
    return await ctx.client.request(
        "DELETE", f"/articles/{slug}/favorite", json=_sneaky("article"), headers=ctx.headers
    )


async def _comment(ctx: Context) -> Response:
    slug = await _article(ctx)
    return await ctx.client.post(
        f"/articles/{slug}/comments", json=_sneaky("comment", body="hello"), headers=ctx.headers
    )


async def _delete_comment(ctx: Context) -> Response:
    slug = await _article(ctx)
    created = await ctx.client.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=ctx.headers)
    comment_id = created.json()["comment"]["id"]
    return await ctx.client.request(
        "DELETE", f"/articles/{slug}/comments/{comment_id}", json=_sneaky("comment"), headers=ctx.headers
    )


async def _follow(ctx: Context) -> Response:
    other = await register(ctx.client)
    return await ctx.client.post(f"/profiles/{other['username']}/follow", json=_sneaky("profile"), headers=ctx.headers)


async def _unfollow(ctx: Context) -> Response:
    other = await register(ctx.client)
    return await ctx.client.request(
        "DELETE", f"/profiles/{other['username']}/follow", json=_sneaky("profile"), headers=ctx.headers
    )


PROBES: dict[tuple[str, str], tuple[Probe, int]] = {
    ("POST", "/api/users"): (_register, 201),
    ("POST", "/api/users/login"): (_login, 200),
    ("POST", "/api/users/refresh"): (_refresh, 200),
    ("POST", "/api/users/logout"): (_logout, 204),
    ("DELETE", "/api/user/sessions/{session_id}"): (_revoke_session, 204),
    ("PUT", "/api/user"): (_update_user, 200),
    ("POST", "/api/users/verify"): (_verify, 422),
    ("POST", "/api/users/verify/resend"): (_resend_verification, 202),
    ("POST", "/api/users/password-reset"): (_password_reset, 202),
    ("POST", "/api/users/password-reset/confirm"): (_password_reset_confirm, 422),
    ("POST", "/api/articles"): (_create_article, 201),
    ("PUT", "/api/articles/{slug}"): (_update_article, 200),
    ("DELETE", "/api/articles/{slug}"): (_delete_article, 204),
    ("POST", "/api/articles/{slug}/favorite"): (_favorite, 200),
    ("DELETE", "/api/articles/{slug}/favorite"): (_unfavorite, 200),
    ("POST", "/api/articles/{slug}/comments"): (_comment, 201),
    ("DELETE", "/api/articles/{slug}/comments/{comment_id}"): (_delete_comment, 204),
    ("POST", "/api/profiles/{username}/follow"): (_follow, 200),
    ("DELETE", "/api/profiles/{username}/follow"): (_unfollow, 200),
}


def test_every_write_endpoint_outside_the_admin_api_is_probed(app: Any) -> None:
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and not route.path.startswith("/api/admin/")
        for method in (route.methods or set()) & WRITE_METHODS
    }
    assert routes == set(PROBES)


async def test_no_write_endpoint_sets_role_or_status(client: AsyncClient, session: AsyncSession) -> None:
    admin = await make_user(client, session, Role.ADMIN)
    user = await register(client)
    ctx = Context(client, user)
    for (method, path), (probe, expected) in PROBES.items():
        response = await probe(ctx)
        assert response.status_code == expected, (method, path, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            assert "status" not in response.json().get("user", {}), (method, path)
            assert response.json().get("user", {}).get("role", "user") == "user", (method, path)
        me = await client.get("/user", headers=ctx.headers)
        assert me.status_code == 200, (method, path, me.text)  # not suspended
        assert me.json()["user"]["role"] == "user", (method, path)
    for username in [user["username"], *(new["username"] for new in ctx.new_accounts)]:
        listed = await account(client, admin["token"], username)
        assert (listed["role"], listed["status"]) == ("user", "active"), username
