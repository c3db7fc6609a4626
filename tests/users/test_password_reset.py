"""Password reset (contract B7) over HTTP: the link arrives at a real SMTP server, the confirmation follows it."""

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import func, select, update

from service.core.db import utcnow
from service.users.models import EmailToken, TokenPurpose
from tests.helpers import PASSWORD, auth
from tests.users.test_verification import EXPIRED, INVALID, Mail, make_mail, sign_up

NEW_PASSWORD = "a-brand-new-passphrase"

mail = make_mail()


async def ask(client: AsyncClient, email: Any) -> Response:
    return await client.post("/users/password-reset", json={"email": email})


async def confirm(client: AsyncClient, token: Any, password: Any = NEW_PASSWORD) -> Response:
    return await client.post("/users/password-reset/confirm", json={"token": token, "password": password})


async def login(client: AsyncClient, email: str, password: str) -> Response:
    return await client.post("/users/login", json={"user": {"email": email, "password": password}})


async def reset_link(mail: Mail, email: str) -> str:
    response = await ask(mail.client, email)
    assert response.status_code == 202, response.text
    assert response.content == b""
    return await mail.link(email, "/reset-password")


async def test_reset_sets_the_password_and_revokes_every_session(mail: Mail, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="service")  # all of ours; a driver's DEBUG lines echo SQL parameters
    user, _ = await sign_up(mail)
    other_device = (await login(mail.client, user["email"], PASSWORD)).json()["user"]
    token = await reset_link(mail, user["email"])
    message = mail.server.messages[-1]
    assert message["Subject"] == "Reset your password"
    assert "1 hour" in mail.server.text(message)

    response = await confirm(mail.client, token)
    assert response.status_code == 204
    assert response.content == b""

    for session in (user, other_device):  # every session, not only the others: the caller has none here
        response = await mail.client.get("/user", headers=auth(session["token"]))
        assert response.status_code == 401
        assert response.json() == {"errors": {"token": ["is invalid"]}}
        refreshed = await mail.client.post("/users/refresh", json={"refreshToken": session["refreshToken"]})
        assert refreshed.status_code == 401
    assert (await login(mail.client, user["email"], PASSWORD)).status_code == 401
    response = await login(mail.client, user["email"], NEW_PASSWORD)
    assert response.status_code == 200
    assert response.json()["user"]["emailVerified"] is True  # the link reached the address: that proves it

    leaks = [r for r in caplog.records if token in f"{r.getMessage()} {r.__dict__}" or NEW_PASSWORD in str(r.__dict__)]
    assert not leaks, [(r.name, r.getMessage()[:300]) for r in leaks]


async def test_unknown_address_is_accepted_and_mails_nothing(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    rows = await mail.outbox_rows()
    for email in ("nobody@example.com", "NOBODY@example.com"):
        response = await ask(mail.client, email)
        assert response.status_code == 202
        assert response.content == b""
    assert await mail.outbox_rows() == rows
    async with mail.engine.connect() as conn:
        resets = await conn.scalar(select(func.count()).where(EmailToken.purpose == TokenPurpose.RESET))
    assert resets == 0
    # The next message to arrive is the one asked for now: nothing was on its way to the unknown address.
    await reset_link(mail, user["email"])
    assert [m["To"] for m in mail.server.messages] == [user["email"], user["email"]]


async def test_address_is_matched_case_insensitively(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    response = await ask(mail.client, user["email"].upper())
    assert response.status_code == 202
    token = await mail.link(user["email"], "/reset-password")
    assert (await confirm(mail.client, token)).status_code == 204


async def test_a_token_resets_once(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    assert (await confirm(mail.client, token)).status_code == 204
    response = await confirm(mail.client, token, "yet-another-password")
    assert response.status_code == 422
    assert response.json() == INVALID
    assert (await login(mail.client, user["email"], NEW_PASSWORD)).status_code == 200


async def test_using_one_link_voids_the_others(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    first = await reset_link(mail, user["email"])
    second = await reset_link(mail, user["email"])
    assert first != second
    assert (await confirm(mail.client, second)).status_code == 204
    response = await confirm(mail.client, first, "yet-another-password")
    assert response.status_code == 422
    assert response.json() == INVALID


async def test_expired_token(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    async with mail.engine.begin() as conn:
        await conn.execute(
            update(EmailToken)
            .where(EmailToken.purpose == TokenPurpose.RESET)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    response = await confirm(mail.client, token)
    assert response.status_code == 422
    assert response.json() == EXPIRED
    assert (await login(mail.client, user["email"], PASSWORD)).status_code == 200  # unchanged


async def test_unknown_and_verification_tokens_are_invalid(mail: Mail) -> None:
    user, verify_token = await sign_up(mail)
    for token in ("x" * 43, verify_token):
        response = await confirm(mail.client, token)
        assert response.status_code == 422
        assert response.json() == INVALID
    assert (await login(mail.client, user["email"], PASSWORD)).status_code == 200


async def test_a_link_for_a_former_address_is_invalid(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    new_address = f"moved-{uuid.uuid4().hex[:8]}@example.com"
    response = await mail.client.put("/user", json={"user": {"email": new_address}}, headers=auth(user["token"]))
    assert response.status_code == 200
    await mail.next(new_address)
    response = await confirm(mail.client, token)
    assert response.status_code == 422
    assert response.json() == INVALID


async def test_a_password_change_voids_pending_links(mail: Mail) -> None:
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    changed = await mail.client.put(
        "/user", json={"user": {"password": "changed-it-myself"}}, headers=auth(user["token"])
    )
    assert changed.status_code == 200
    response = await confirm(mail.client, token)
    assert response.status_code == 422
    assert response.json() == INVALID
    assert (await login(mail.client, user["email"], "changed-it-myself")).status_code == 200


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"password": NEW_PASSWORD}, {"token": ["can't be blank"]}),
        ({"token": "", "password": NEW_PASSWORD}, {"token": ["can't be blank"]}),
        ({"token": None, "password": NEW_PASSWORD}, {"token": ["can't be blank"]}),
        ({"token": 7, "password": NEW_PASSWORD}, {"token": ["is invalid"]}),
        ({"token": "t" * 201, "password": NEW_PASSWORD}, {"token": ["is too long (maximum is 200 characters)"]}),
        ({"token": "REAL"}, {"password": ["can't be blank"]}),
        ({"token": "REAL", "password": "  "}, {"password": ["can't be blank"]}),
        ({"token": "REAL", "password": None}, {"password": ["can't be blank"]}),
        ({"token": "REAL", "password": "short"}, {"password": ["is too short (minimum is 8 characters)"]}),
        ({"token": "REAL", "password": "p" * 257}, {"password": ["is too long (maximum is 256 characters)"]}),
        ({"token": "REAL", "password": 12345678}, {"password": ["is invalid"]}),
        ({}, {"token": ["can't be blank"], "password": ["can't be blank"]}),
    ],
)
async def test_bad_confirm_input_is_field_keyed_and_changes_nothing(
    mail: Mail, body: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    sent = {key: token if value == "REAL" else value for key, value in body.items()}
    response = await mail.client.post("/users/password-reset/confirm", json=sent)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert (await mail.client.get("/user", headers=auth(user["token"]))).status_code == 200  # session kept
    assert (await login(mail.client, user["email"], PASSWORD)).status_code == 200  # password kept
    assert (await confirm(mail.client, token)).status_code == 204  # the token is still unused


async def test_confirm_without_a_usable_body(mail: Mail) -> None:
    for sent in ({}, {"json": [1]}, {"json": "token"}):
        response = await mail.client.post("/users/password-reset/confirm", **sent)
        assert response.status_code == 422
        assert response.json() == {"errors": {"body": ["can't be blank"]}}
    response = await mail.client.post(
        "/users/password-reset/confirm", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {"errors": {"request": ["can't be blank"]}}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"email": ["can't be blank"]}),
        ({"email": ""}, {"email": ["can't be blank"]}),
        ({"email": None}, {"email": ["can't be blank"]}),
        ({"email": "not-an-address"}, {"email": ["is invalid"]}),
        ({"email": 42}, {"email": ["is invalid"]}),
        (None, {"email": ["can't be blank"]}),
    ],
)
async def test_bad_reset_request_is_field_keyed(mail: Mail, body: Any, errors: dict[str, list[str]]) -> None:
    response = await mail.client.post("/users/password-reset", json=body)
    assert response.status_code == 422
    assert response.json() == {"errors": errors}
    assert await mail.outbox_rows() == 0


mail_limited = make_mail(rate_limit_email_recipient="2/hour")


async def test_reset_is_rate_limited_per_recipient(mail_limited: Mail) -> None:
    user, _ = await sign_up(mail_limited)
    for email in (user["email"], "nobody@example.com"):  # known or not, the same answers
        for _ in range(2):
            assert (await ask(mail_limited.client, email)).status_code == 202
        response = await ask(mail_limited.client, email.upper())
        assert response.status_code == 429
        assert response.json() == {"errors": {"rate": ["limit exceeded"]}}
        assert int(response.headers["Retry-After"]) >= 1
    assert (await ask(mail_limited.client, "someone-else@example.com")).status_code == 202


mail_address_limited = make_mail(rate_limit_email_address="2/hour")


async def test_reset_and_confirm_are_rate_limited_per_client_address(mail_address_limited: Mail) -> None:
    client = mail_address_limited.client
    for n in range(2):
        assert (await ask(client, f"a{n}@example.com")).status_code == 202
    assert (await ask(client, "a9@example.com")).status_code == 429
    for _ in range(2):
        assert (await confirm(client, "x" * 43)).status_code == 422
    response = await confirm(client, "x" * 43)
    assert response.status_code == 429
    assert response.json() == {"errors": {"rate": ["limit exceeded"]}}


async def test_racing_confirms_exactly_one_wins(mail: Mail, backend: str) -> None:
    """Two confirmations of one token at the same moment, each on its own committing connection."""
    if backend != "postgresql":
        pytest.skip("concurrency is exercised on PostgreSQL")
    user, _ = await sign_up(mail)
    token = await reset_link(mail, user["email"])
    passwords = ("first-racer-password", "second-racer-password")
    responses = await asyncio.gather(*(confirm(mail.client, token, password) for password in passwords))
    assert sorted(r.status_code for r in responses) == [204, 422]
    loser = next(r for r in responses if r.status_code == 422)
    assert loser.json() == INVALID
    winner = passwords[[r.status_code for r in responses].index(204)]
    assert (await login(mail.client, user["email"], winner)).status_code == 200
    assert (await login(mail.client, user["email"], next(p for p in passwords if p != winner))).status_code == 401
