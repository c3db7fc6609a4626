"""Contract A1, A2, A5, B1, B2 (users) over HTTP."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from jose import jwt

from service.core.config import Settings
from service.core.security import create_access_token
from tests.helpers import PASSWORD, auth, register

JAKE = {"username": "jake", "email": "jake@jake.jake", "password": "jakejakejake"}


async def test_register_returns_201_and_user_with_token(client: AsyncClient) -> None:
    response = await client.post("/users", json={"user": JAKE})
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["username"] == "jake"
    assert user["email"] == "jake@jake.jake"
    assert user["bio"] is None
    assert user["image"] is None
    assert user["role"] == "user"
    assert isinstance(user["token"], str)
    assert "password" not in user


async def test_register_token_works_at_once(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.get("/user", headers=auth(user["token"]))
    assert response.status_code == 200
    assert response.json()["user"]["username"] == user["username"]


@pytest.mark.parametrize("field", ["username", "email"])
async def test_register_duplicate_is_conflict(client: AsyncClient, field: str) -> None:
    await client.post("/users", json={"user": JAKE})
    other = {"username": "other", "email": "other@example.com", "password": "password123"}
    other[field] = JAKE[field].upper()  # case-insensitive uniqueness
    response = await client.post("/users", json={"user": other})
    assert response.status_code == 409
    assert response.json() == {"errors": {field: ["has already been taken"]}}


async def test_concurrent_duplicate_registration_yields_one_account(committing_client: AsyncClient) -> None:
    client = committing_client
    responses = await asyncio.gather(*(client.post("/users", json={"user": JAKE}) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]
    assert all(
        r.json() == {"errors": {"username": ["has already been taken"]}} for r in responses[1:] if r.status_code == 409
    )


@pytest.mark.parametrize("field", ["username", "email", "password"])
@pytest.mark.parametrize("blank", [None, "", "   ", "missing"])
async def test_register_blank_field_is_cant_be_blank(client: AsyncClient, field: str, blank: Any) -> None:
    payload: dict[str, Any] = dict(JAKE)
    if blank == "missing":
        del payload[field]
    else:
        payload[field] = blank
    response = await client.post("/users", json={"user": payload})
    assert response.status_code == 422
    assert response.json()["errors"][field] == ["can't be blank"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "not-an-email", "is invalid"),
        ("username", "jake smith", "is invalid"),
        ("username", "j" * 51, "is too long (maximum is 50 characters)"),
        ("password", "short", "is too short (minimum is 8 characters)"),
        ("password", "p" * 257, "is too long (maximum is 256 characters)"),
        ("username", 123, "is invalid"),
        ("email", ["a@b.c"], "is invalid"),
    ],
)
async def test_register_invalid_field(client: AsyncClient, field: str, value: Any, message: str) -> None:
    response = await client.post("/users", json={"user": {**JAKE, field: value}})
    assert response.status_code == 422
    assert response.json() == {"errors": {field: [message]}}


async def test_register_reports_every_bad_field(client: AsyncClient) -> None:
    response = await client.post("/users", json={"user": {"username": "", "email": "x", "password": "1"}})
    assert response.status_code == 422
    assert response.json() == {
        "errors": {
            "username": ["can't be blank"],
            "email": ["is invalid"],
            "password": ["is too short (minimum is 8 characters)"],
        }
    }


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'{"usr": {}}', b'{"user": "jake"}'])
async def test_register_bad_envelope_names_the_key(client: AsyncClient, body: bytes) -> None:
    response = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == ["user"]
    assert errors["user"][0] in ("can't be blank", "is invalid")


async def test_register_cannot_set_role(client: AsyncClient) -> None:
    response = await client.post("/users", json={"user": {**JAKE, "role": "admin", "status": "suspended"}})
    assert response.status_code == 201
    assert response.json()["user"]["role"] == "user"
    login = await client.post("/users/login", json={"user": {"email": JAKE["email"], "password": JAKE["password"]}})
    assert login.status_code == 200


async def test_login_returns_user_with_working_token(client: AsyncClient) -> None:
    await register(client, "alice")
    response = await client.post("/users/login", json={"user": {"email": "ALICE@example.com", "password": PASSWORD}})
    assert response.status_code == 200
    user = response.json()["user"]
    assert user["username"] == "alice"
    assert (await client.get("/user", headers=auth(user["token"]))).status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "alice@example.com", "password": "wrong-password"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
)
async def test_login_wrong_credentials_is_401(client: AsyncClient, credentials: dict[str, str]) -> None:
    await register(client, "alice")
    response = await client.post("/users/login", json={"user": credentials})
    assert response.status_code == 401
    assert response.json() == {"errors": {"credentials": ["invalid"]}}
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("field", ["email", "password"])
async def test_login_blank_field(client: AsyncClient, field: str) -> None:
    payload = {"email": "a@b.co", "password": "password1", field: ""}
    response = await client.post("/users/login", json={"user": payload})
    assert response.status_code == 422
    assert response.json()["errors"][field][0] == "can't be blank"


async def test_login_unknown_email_costs_a_password_check(client: AsyncClient, monkeypatch: Any) -> None:
    """Timing safety, checked by work done rather than by the clock: an unknown e-mail still verifies a hash."""
    from service.core import security

    calls: list[str] = []
    real = security._hasher.verify

    def spy(password: str, hash_: str) -> bool:
        calls.append(hash_)
        return real(password, hash_)

    monkeypatch.setattr(security._hasher, "verify", spy)
    response = await client.post("/users/login", json={"user": {"email": "ghost@example.com", "password": PASSWORD}})
    assert response.status_code == 401
    assert calls == [security._DUMMY_HASH]


async def test_get_current_user_requires_token(client: AsyncClient) -> None:
    response = await client.get("/user")
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is missing"]}}
    assert response.headers["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "BEARER"])
async def test_both_schemes_case_insensitive(client: AsyncClient, scheme: str) -> None:
    user = await register(client)
    response = await client.get("/user", headers=auth(user["token"], scheme))
    assert response.status_code == 200
    assert response.json()["user"]["token"]


def _forged(settings: Settings, **claims: Any) -> str:
    return str(jwt.encode({"sub": "1", "exp": 4102444800, **claims}, settings.jwt_secret(), algorithm="HS256"))


@pytest.mark.parametrize(
    "header",
    [
        "Token not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Token",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
        "Token eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
    ],
)
async def test_malformed_or_unsigned_token_is_invalid(client: AsyncClient, header: str) -> None:
    response = await client.get("/user", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}
    assert "WWW-Authenticate" in response.headers


async def test_wrong_signature_is_invalid(client: AsyncClient) -> None:
    user = await register(client)
    claims = jwt.get_unverified_claims(user["token"])
    forged = jwt.encode(claims, "another-secret-another-secret-another-secret", algorithm="HS256")
    response = await client.get("/user", headers=auth(forged))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


async def test_other_hmac_algorithm_is_refused(client: AsyncClient, settings: Settings) -> None:
    user = await register(client)
    claims = jwt.get_unverified_claims(user["token"])
    forged = jwt.encode(claims, settings.jwt_secret(), algorithm="HS512")
    response = await client.get("/user", headers=auth(forged))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


async def test_expired_token(client: AsyncClient, settings: Settings) -> None:
    user = await register(client)
    me = await client.get("/user", headers=auth(user["token"]))
    assert me.status_code == 200
    user_id = int(jwt.get_unverified_claims(user["token"])["sub"])
    expired = create_access_token(
        user_id, 1, secret=settings.jwt_secret(), algorithm="HS256", ttl=timedelta(seconds=-10)
    )
    response = await client.get("/user", headers=auth(expired))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["has expired"]}}


async def test_token_of_unknown_user_is_invalid(client: AsyncClient, settings: Settings) -> None:
    token = create_access_token(987654321, 1, secret=settings.jwt_secret(), algorithm="HS256", ttl=timedelta(hours=1))
    response = await client.get("/user", headers=auth(token))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


async def test_token_without_subject_is_invalid(client: AsyncClient, settings: Settings) -> None:
    token = jwt.encode({"exp": 4102444800}, settings.jwt_secret(), algorithm="HS256")
    response = await client.get("/user", headers=auth(token))
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is invalid"]}}


async def test_update_user_fields_and_keep_others(client: AsyncClient) -> None:
    user = await register(client, "bob")
    response = await client.put(
        "/user",
        headers=auth(user["token"]),
        json={"user": {"bio": "I like to skateboard", "image": "https://x.io/a.png"}},
    )
    assert response.status_code == 200
    updated = response.json()["user"]
    assert updated["bio"] == "I like to skateboard"
    assert updated["image"] == "https://x.io/a.png"
    assert updated["username"] == "bob"
    assert updated["email"] == user["email"]
    again = (await client.get("/user", headers=auth(user["token"]))).json()["user"]
    assert again["bio"] == "I like to skateboard"


@pytest.mark.parametrize("value", ["", None])
async def test_update_bio_and_image_to_empty_stores_null(client: AsyncClient, value: Any) -> None:
    user = await register(client)
    headers = auth(user["token"])
    await client.put("/user", headers=headers, json={"user": {"bio": "bio", "image": "https://x.io/a.png"}})
    response = await client.put("/user", headers=headers, json={"user": {"bio": value, "image": value}})
    assert response.status_code == 200
    assert response.json()["user"]["bio"] is None
    assert response.json()["user"]["image"] is None


async def test_update_username_and_email_new_token_and_old_token_work(client: AsyncClient) -> None:
    user = await register(client, "carol")
    response = await client.put(
        "/user", headers=auth(user["token"]), json={"user": {"username": "carol2", "email": "carol2@example.com"}}
    )
    assert response.status_code == 200
    updated = response.json()["user"]
    assert (updated["username"], updated["email"]) == ("carol2", "carol2@example.com")
    for token in (updated["token"], user["token"]):
        me = await client.get("/user", headers=auth(token))
        assert me.status_code == 200
        assert me.json()["user"]["username"] == "carol2"


async def test_update_password_then_login_with_it(client: AsyncClient) -> None:
    user = await register(client, "dave")
    response = await client.put("/user", headers=auth(user["token"]), json={"user": {"password": "new-password-1"}})
    assert response.status_code == 200
    old = await client.post("/users/login", json={"user": {"email": user["email"], "password": PASSWORD}})
    assert old.status_code == 401
    new = await client.post("/users/login", json={"user": {"email": user["email"], "password": "new-password-1"}})
    assert new.status_code == 200


async def test_update_to_own_values_is_not_a_conflict(client: AsyncClient) -> None:
    user = await register(client, "erin")
    response = await client.put(
        "/user", headers=auth(user["token"]), json={"user": {"username": "ERIN", "email": user["email"].upper()}}
    )
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "ERIN"


@pytest.mark.parametrize("field", ["username", "email"])
async def test_update_to_anothers_value_is_conflict(client: AsyncClient, field: str) -> None:
    other = await register(client, "frank")
    user = await register(client, "grace")
    response = await client.put("/user", headers=auth(user["token"]), json={"user": {field: other[field]}})
    assert response.status_code == 409
    assert response.json() == {"errors": {field: ["has already been taken"]}}


@pytest.mark.parametrize("field", ["username", "email", "password"])
@pytest.mark.parametrize("value", ["", None, "  "])
async def test_update_blank_credential_field(client: AsyncClient, field: str, value: Any) -> None:
    user = await register(client)
    response = await client.put("/user", headers=auth(user["token"]), json={"user": {field: value}})
    assert response.status_code == 422
    assert response.json() == {"errors": {field: ["can't be blank"]}}


async def test_update_with_no_field_is_blank_user(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.put("/user", headers=auth(user["token"]), json={"user": {}})
    assert response.status_code == 422
    assert response.json() == {"errors": {"user": ["can't be blank"]}}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bio", "b" * 2001, "is too long (maximum is 2000 characters)"),
        ("image", "https://x.io/" + "a" * 2000, "is too long (maximum is 2000 characters)"),
        ("image", "javascript:alert(1)", "is invalid"),
        ("email", "nope", "is invalid"),
    ],
)
async def test_update_invalid_field_changes_nothing(client: AsyncClient, field: str, value: str, message: str) -> None:
    user = await register(client)
    headers = auth(user["token"])
    response = await client.put("/user", headers=headers, json={"user": {field: value}})
    assert response.status_code == 422
    assert response.json() == {"errors": {field: [message]}}
    me = (await client.get("/user", headers=headers)).json()["user"]
    assert me[field] == user[field]


async def test_update_requires_token(client: AsyncClient) -> None:
    response = await client.put("/user", json={"user": {"bio": "x"}})
    assert response.status_code == 401
    assert response.json() == {"errors": {"token": ["is missing"]}}
