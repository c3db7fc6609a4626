"""The few plain HTTP calls the harness makes itself (readiness, logins, the soak's writers); wrk makes the rest."""

import http.client
import json
from typing import Any

HOST = "127.0.0.1"


def _request(port: int, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def get_status(port: int, path: str, timeout: float = 5.0) -> int:
    return _request(port, "GET", path, None, timeout)[0]


def register(port: int, username: str, password: str) -> str:
    """Register ``username`` (``<username>@example.com``) through the API and return the JWT."""
    user = {"username": username, "email": f"{username}@example.com", "password": password}
    status, body = _request(port, "POST", "/api/users", {"user": user}, 30.0)
    if status != 201:
        raise RuntimeError(f"registering {username} answered {status}: {body[:200]!r}")
    token: str = json.loads(body)["user"]["token"]
    return token


def login(port: int, email: str, password: str) -> str:
    """Log in through the API and return the JWT."""
    status, body = _request(port, "POST", "/api/users/login", {"user": {"email": email, "password": password}}, 30.0)
    if status != 200:
        raise RuntimeError(f"login as {email} answered {status}: {body[:200]!r}")
    token: str = json.loads(body)["user"]["token"]
    return token
