"""Passwords (Argon2 via pwdlib), access tokens (JWT via python-jose, algorithm pinned on decode), refresh tokens."""

import asyncio
import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jose import ExpiredSignatureError, JWTError, jwt
from pwdlib import PasswordHash

from service.core.errors import Unauthorized

_hasher = PasswordHash.recommended()
# A real hash of a random password: verifying against it costs what a real check costs (timing-safe login).
_DUMMY_HASH = _hasher.hash(uuid.uuid4().hex)


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """Argon2 is CPU-bound by design: run it off the event loop."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; with no hash (unknown account) still spend the same work. Returns (ok, new_hash)."""
    if password_hash is None:
        await asyncio.to_thread(_hasher.verify, password, _DUMMY_HASH)
        return False, None
    return await asyncio.to_thread(_hasher.verify_and_update, password, password_hash)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    session_id: int
    issued_at: datetime
    expires_at: datetime


def create_access_token(user_id: int, session_id: int, *, secret: str, algorithm: str, ttl: timedelta) -> str:
    """A JWT for this user within this session (``sid``): valid until it expires or the session is revoked."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "sid": session_id,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return str(jwt.encode(claims, secret, algorithm=algorithm))


def decode_access_token(token: str, *, secret: str, algorithm: str) -> TokenClaims:
    """Verify signature (with the one pinned algorithm) and expiry; 401 ``token`` otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[algorithm], options={"require_exp": True, "require_sub": True})
    except ExpiredSignatureError as exc:
        raise Unauthorized("token", "has expired") from exc
    except (JWTError, ValueError, TypeError) as exc:
        raise Unauthorized("token", "is invalid") from exc
    try:
        user_id = int(claims["sub"])
        session_id = int(claims["sid"])  # a token that names no session (issued before sessions existed) is refused
        issued_at = datetime.fromtimestamp(int(claims.get("iat", 0)), UTC)
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("token", "is invalid") from exc
    return TokenClaims(user_id=user_id, session_id=session_id, issued_at=issued_at, expires_at=expires_at)


# ---------------------------------------------------------------------------------------------------------------
# Refresh tokens: opaque random strings; the database keeps only their SHA-256.


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def next_refresh_token(token: str, *, secret: str) -> str:
    """The token that replaces ``token`` at its refresh: derived from it (HMAC with the server's secret), not drawn
    at random, so two racing refreshes of one token (two tabs) both hand out the one successor that was stored,
    although only its hash is kept. Without the secret nobody can compute it."""
    digest = hmac.new(secret.encode(), b"refresh:" + token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    """What is stored and looked up: a fast hash suffices, as the token is 256 random bits (no guessing)."""
    return hashlib.sha256(token.encode()).hexdigest()
