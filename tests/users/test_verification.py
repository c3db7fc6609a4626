"""E-mail verification (contract B7) over HTTP: the mail arrives at a real SMTP server, its link is followed.

The ``mail`` fixture is the service as it runs without Redis: requests commit on their own connections and the
in-process deliverer sends each committed outbox event to the aiosmtpd server of ``smtp_server``.
"""

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from httpx import ASGITransport, AsyncClient, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.core.config import Settings
from service.core.db import build_database, utcnow
from service.core.security import token_hash
from service.main import create_app
from service.models import Base
from service.outbox.models import OutboxEvent
from service.outbox.runtime import OutboxRuntime
from service.users.models import EmailToken, User
from tests.helpers import PASSWORD, article_payload, auth, serving
from tests.mail_server import SMTPServer

FRONTEND = "https://app.example.test/conduit"
INVALID = {"errors": {"token": ["is invalid"]}}
EXPIRED = {"errors": {"token": ["has expired"]}}
_LINK = re.compile(r"https?://\S+")


@dataclass
class Mail:
    """A client of the committing app, the SMTP server its mails reach, and the engine to look into the tables."""

    client: AsyncClient
    server: SMTPServer
    engine: AsyncEngine

    async def next(self, to: str) -> EmailMessage:
        """The next message to arrive (waited for), which must be addressed to ``to``."""
        seen = len(self.server.messages)
        message = (await self.server.wait_for(seen + 1))[seen]
        assert message["To"] == to
        return message

    async def link(self, to: str, path: str) -> str:
        """The token of the link in the next message to ``to``, which must open ``{FRONTEND}{path}``."""
        message = await self.next(to)
        links: set[str] = set(_LINK.findall(self.server.text(message)))
        assert len(links) == 1, links
        url = urlsplit(links.pop())
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{FRONTEND}{path}"
        assert f'href="{FRONTEND}{path}?token=' in self.server.html(message)
        (token,) = parse_qs(url.query)["token"]
        return token

    async def outbox_rows(self) -> int:
        async with self.engine.connect() as conn:
            return len((await conn.execute(select(OutboxEvent.id))).all())


async def empty_tables(engine: AsyncEngine) -> None:
    """Undo what a committing test wrote, on either backend (the migration's counters row stays, at zero)."""
    tables = [t for t in reversed(Base.metadata.sorted_tables) if t.name != "counters"]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await conn.execute(table.delete())
        await conn.execute(text("UPDATE counters SET value = 0"))


async def _mail(configured: Settings, engine: AsyncEngine, server: SMTPServer) -> AsyncIterator[Mail]:
    app = create_app(configured)
    database = build_database(engine)  # the production paths: each request commits on its own connection
    runtime = OutboxRuntime(configured, database, CollectorRegistry())  # what the lifespan starts, without Redis
    runtime.start()
    try:
        async with AsyncClient(transport=ASGITransport(app=serving(app, database)), base_url="http://test/api") as c:
            yield Mail(c, server, engine)
    finally:
        await runtime.stop()
        await app.state.rate_limiter.aclose()
        await empty_tables(engine)


def make_mail(**overrides: Any) -> Any:
    """A ``mail`` fixture whose app has these settings too."""

    @pytest.fixture
    async def fixture(settings: Settings, engine: AsyncEngine, smtp_server: SMTPServer) -> AsyncIterator[Mail]:
        configured = settings.model_copy(update={**smtp_server.settings(), "frontend_url": f"{FRONTEND}/", **overrides})
        async for value in _mail(configured, engine, smtp_server):
            yield value

    return fixture


mail = make_mail()


async def sign_up(mail: Mail, name: str | None = None) -> tuple[dict[str, Any], str]:
    """Register over HTTP; the user object and the token of the verification link mailed to them."""
    name = name or f"u{uuid.uuid4().hex[:10]}"
    payload = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = await mail.client.post("/users", json={"user": payload})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()["user"]
    return user, await mail.link(user["email"], "/verify")


async def verify(client: AsyncClient, token: Any) -> Response:
    return await client.post("/users/verify", json={"token": token})


async def current(client: AsyncClient, token: str) -> dict[str, Any]:
    response = await client.get("/user", headers=auth(token))
    assert response.status_code == 200, response.text
    user: dict[str, Any] = response.json()["user"]
    return user


def logged_values(caplog: pytest.LogCaptureFixture) -> str:
    """Every message and every extra field of every record logged during the test, as one text."""
    return "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)


async def test_registration_mails_a_link_that_verifies_the_address(
    mail: Mail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")  # all of ours; a driver's DEBUG lines echo SQL parameters
    user, token = await sign_up(mail)
    assert user["emailVerified"] is False
    assert (await current(mail.client, user["token"]))["emailVerified"] is False
    message = mail.server.messages[-1]
    assert message["Subject"] == "Confirm your e-mail address"
    assert f"Hello {user['username']}," in mail.server.text(message)
    assert "48 hours" in mail.server.text(message)

    response = await verify(mail.client, token)
    assert response.status_code == 200, response.text
    verified = response.json()["user"]
    assert verified["emailVerified"] is True
    assert {verified["email"], verified["username"]} == {user["email"], user["username"]}
    # The response opens a session, as login does: its tokens work, and the registration's still do.
    assert (await current(mail.client, verified["token"]))["emailVerified"] is True
    assert (await current(mail.client, user["token"]))["emailVerified"] is True
    refreshed = await mail.client.post("/users/refresh", json={"refreshToken": verified["refreshToken"]})
    assert refreshed.status_code == 200
    assert refreshed.json()["user"]["emailVerified"] is True

    leaks = [r for r in caplog.records if token in f"{r.getMessage()} {r.__dict__}"]
    assert not leaks, [(r.name, r.getMessage()[:300]) for r in leaks]
    async with mail.engine.connect() as conn:
        stored = (await conn.execute(select(EmailToken.token_hash, EmailToken.used_at))).one()
    assert stored.token_hash == token_hash(token)  # the hash is kept, never the token
    assert stored.used_at is not None


async def test_a_token_verifies_once(mail: Mail) -> None:
    _, token = await sign_up(mail)
    assert (await verify(mail.client, token)).status_code == 200
    response = await verify(mail.client, token)
    assert response.status_code == 422
    assert response.json() == INVALID


async def test_unknown_token_is_invalid(mail: Mail) -> None:
    response = await verify(mail.client, "x" * 43)
    assert response.status_code == 422
    assert response.json() == INVALID


async def test_expired_token(mail: Mail) -> None:
    user, token = await sign_up(mail)
    async with mail.engine.begin() as conn:
        await conn.execute(update(EmailToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = await verify(mail.client, token)
    assert response.status_code == 422
    assert response.json() == EXPIRED
    assert (await current(mail.client, user["token"]))["emailVerified"] is False


async def test_a_reset_token_does_not_verify(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    assert (await mail.client.post("/users/password-reset", json={"email": user["email"]})).status_code == 202
    reset_token = await mail.link(user["email"], "/reset-password")
    response = await verify(mail.client, reset_token)
    assert response.status_code == 422
    assert response.json() == INVALID


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"token": ["can't be blank"]}),
        ({"token": None}, {"token": ["can't be blank"]}),
        ({"token": ""}, {"token": ["can't be blank"]}),
        ({"token": "   "}, {"token": ["can't be blank"]}),
        ({"token": 42}, {"token": ["is invalid"]}),
        ({"token": ["a"]}, {"token": ["is invalid"]}),
        ({"token": "a" * 201}, {"token": ["is too long (maximum is 200 characters)"]}),
        ({"token": "a\u0000b"}, {"token": ["is invalid"]}),
        (None, {"token": ["can't be blank"]}),
    ],
)
async def test_bad_verify_input_is_field_keyed(mail: Mail, body: Any, errors: dict[str, list[str]]) -> None:
    user, token = await sign_up(mail)
    response = await mail.client.post("/users/verify", json=body)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert (await current(mail.client, user["token"]))["emailVerified"] is False  # nothing changed
    assert (await verify(mail.client, token)).status_code == 200  # the real token still works


async def test_unreadable_body(mail: Mail) -> None:
    response = await mail.client.post(
        "/users/verify", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {"errors": {"token": ["can't be blank"]}}


async def test_email_change_unverifies_and_mails_the_new_address(mail: Mail) -> None:
    user, old_token = await sign_up(mail)
    assert (await verify(mail.client, old_token)).status_code == 200
    _, pending = await sign_up(mail, f"second{uuid.uuid4().hex[:6]}")  # another account, still unverified
    new_address = f"new-{uuid.uuid4().hex[:8]}@example.com"

    response = await mail.client.put("/user", json={"user": {"email": new_address}}, headers=auth(user["token"]))
    assert response.status_code == 200, response.text
    assert response.json()["user"]["emailVerified"] is False
    assert response.json()["user"]["email"] == new_address
    token = await mail.link(new_address, "/verify")

    response = await verify(mail.client, token)
    assert response.status_code == 200
    assert response.json()["user"]["email"] == new_address
    assert response.json()["user"]["emailVerified"] is True
    assert (await verify(mail.client, pending)).status_code == 200  # another account's token is its own


async def test_a_link_sent_to_the_old_address_does_not_verify_the_new_one(mail: Mail) -> None:
    user, old_token = await sign_up(mail)  # not followed yet
    new_address = f"new-{uuid.uuid4().hex[:8]}@example.com"
    response = await mail.client.put("/user", json={"user": {"email": new_address}}, headers=auth(user["token"]))
    assert response.status_code == 200
    new_token = await mail.link(new_address, "/verify")
    response = await verify(mail.client, old_token)
    assert response.status_code == 422
    assert response.json() == INVALID
    assert (await current(mail.client, user["token"]))["emailVerified"] is False
    assert (await verify(mail.client, new_token)).status_code == 200


async def test_an_unchanged_address_stays_verified_and_gets_no_mail(mail: Mail) -> None:
    user, token = await sign_up(mail)
    assert (await verify(mail.client, token)).status_code == 200
    for email in (user["email"], user["email"].upper()):  # the same address, compared case-insensitively
        response = await mail.client.put(
            "/user", json={"user": {"email": email, "bio": "hi"}}, headers=auth(user["token"])
        )
        assert response.status_code == 200, response.text
        assert response.json()["user"]["emailVerified"] is True
    assert await mail.outbox_rows() == 1  # the registration's message only
    resent = await mail.client.post("/users/verify/resend", headers=auth(user["token"]))
    assert resent.status_code == 202
    assert await mail.outbox_rows() == 1


async def test_resend_mails_a_new_link(mail: Mail) -> None:
    user, first = await sign_up(mail)
    response = await mail.client.post("/users/verify/resend", headers=auth(user["token"]))
    assert response.status_code == 202
    assert response.content == b""
    second = await mail.link(user["email"], "/verify")
    assert second != first
    assert (await verify(mail.client, second)).status_code == 200
    assert (await verify(mail.client, first)).status_code == 200  # still unused, and the address is the same


async def test_resend_when_verified_sends_nothing(mail: Mail) -> None:
    user, token = await sign_up(mail)
    assert (await verify(mail.client, token)).status_code == 200
    response = await mail.client.post("/users/verify/resend", headers=auth(user["token"]))
    assert response.status_code == 202
    assert response.content == b""
    assert await mail.outbox_rows() == 1
    other, _ = await sign_up(mail)  # the next message to arrive is this one: the resend sent nothing
    assert len(mail.server.messages) == 2
    assert mail.server.messages[-1]["To"] == other["email"]


async def test_resend_needs_a_token(mail: Mail) -> None:
    response = await mail.client.post("/users/verify/resend")
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is missing"]}}


mail_limited = make_mail(rate_limit_email_recipient="2/hour")


async def test_resend_is_rate_limited_per_account(mail_limited: Mail) -> None:
    user, _ = await sign_up(mail_limited)
    for _ in range(2):
        assert (await mail_limited.client.post("/users/verify/resend", headers=auth(user["token"]))).status_code == 202
        await mail_limited.next(user["email"])
    response = await mail_limited.client.post("/users/verify/resend", headers=auth(user["token"]))
    assert response.status_code == 429
    assert response.json() == {"errors": {"rate": ["limit exceeded"]}}
    assert int(response.headers["Retry-After"]) >= 1
    other, _ = await sign_up(mail_limited)  # another account is not limited
    assert (await mail_limited.client.post("/users/verify/resend", headers=auth(other["token"]))).status_code == 202


mail_address_limited = make_mail(rate_limit_email_address="2/hour")


async def test_resend_is_rate_limited_per_client_address(mail_address_limited: Mail) -> None:
    mail = mail_address_limited
    users = [(await sign_up(mail))[0] for _ in range(3)]
    for user in users[:2]:
        assert (await mail.client.post("/users/verify/resend", headers=auth(user["token"]))).status_code == 202
    response = await mail.client.post("/users/verify/resend", headers=auth(users[2]["token"]))
    assert response.status_code == 429


async def test_verifying_a_suspended_account_opens_no_session(mail: Mail) -> None:
    user, token = await sign_up(mail)
    async with mail.engine.begin() as conn:
        await conn.execute(update(User).where(User.username == user["username"]).values(status="suspended"))
    response = await verify(mail.client, token)
    assert response.status_code == 403
    assert response.json() == {"errors": {"account": ["is suspended"]}}


strict_mail = make_mail(require_verified_email=True)


async def test_required_verification_blocks_writes_until_verified(strict_mail: Mail) -> None:
    mail = strict_mail
    user, token = await sign_up(mail)
    headers = auth(user["token"])
    response = await mail.client.post("/articles", json={"article": article_payload()}, headers=headers)
    assert response.status_code == 403
    assert response.json() == {"errors": {"email": ["is not verified"]}}
    assert (await mail.client.post(f"/profiles/{user['username']}/follow", headers=headers)).status_code == 403
    # Reads, and what it takes to get verified or to leave, still work.
    assert (await mail.client.get("/user", headers=headers)).status_code == 200
    assert (await mail.client.get("/articles", headers=headers)).status_code == 200
    assert (await mail.client.put("/user", json={"user": {"bio": "x"}}, headers=headers)).status_code == 200
    assert (await mail.client.post("/users/verify/resend", headers=headers)).status_code == 202
    await mail.next(user["email"])

    assert (await verify(mail.client, token)).status_code == 200
    response = await mail.client.post("/articles", json={"article": article_payload()}, headers=headers)
    assert response.status_code == 201, response.text
    assert (await mail.client.post("/users/logout", headers=headers)).status_code == 204


async def test_verification_is_not_required_by_default(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    response = await mail.client.post("/articles", json={"article": article_payload()}, headers=auth(user["token"]))
    assert response.status_code == 201


async def test_rolled_back_registration_mails_nothing(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    payload = {"username": user["username"], "email": "other@example.com", "password": PASSWORD}
    response = await mail.client.post("/users", json={"user": payload})
    assert response.status_code == 409
    assert await mail.outbox_rows() == 1
    async with mail.engine.connect() as conn:
        tokens = (await conn.execute(select(EmailToken.email))).scalars().all()
    assert tokens == [user["email"]]
