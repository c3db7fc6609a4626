"""A real SMTP peer for tests: an ``aiosmtpd`` server on a free loopback port that keeps what it receives.

Use the ``smtp_server`` fixture (tests/conftest.py), or ``running_smtp_server()`` for a server of your own::

    async def test_mail(smtp_server: SMTPServer) -> None:
        settings = load_settings(environment="test", **smtp_server.settings())  # mail_backend=smtp, host, port...
        ...
        (message,) = await smtp_server.wait_for(1)    # parsed email.message.EmailMessage objects
        assert message["To"] == "jake@example.com"
        link = smtp_server.text(message)               # the text/plain part, decoded

The server runs in a thread of its own (aiosmtpd's ``Controller``), so it answers while the test's loop awaits.
Knobs, all settable at any time:
- ``refuse = "451 4.3.0 try again later"``: answer DATA with this reply (the message is not kept); ``None``: accept.
- ``hold()`` / ``release()``: DATA blocks until released; ``entered`` is set once a DATA is blocked (the client is
  then mid-send), so a test can act at that exact point (the crash test kills the worker there). A client gone
  meanwhile leaves nothing behind; ``hold(keep_first=True)`` keeps the message first and holds only the reply.
- ``credentials=("user", "pass")`` (at construction): AUTH is required and checked.
"""

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class SMTPServer:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []  # (MAIL FROM, RCPT TO) of each kept message
        self.refuse: str | None = None
        self.refused = 0  # DATA commands answered with ``refuse``
        self.entered = threading.Event()
        self.credentials = credentials
        self._gate = threading.Event()
        self._keep_first = False
        self._gate.set()
        self._lock = threading.Lock()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if credentials is not None:
            kwargs = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self, hostname=HOST, port=self.port, **kwargs)

    @property
    def host(self) -> str:
        return HOST

    def settings(self) -> dict[str, Any]:
        """Overrides for ``load_settings`` that send through this server (plain SMTP, no TLS)."""
        values: dict[str, Any] = {"mail_backend": "smtp", "smtp_host": HOST, "smtp_port": self.port, "smtp_tls": "none"}
        if self.credentials is not None:
            values["smtp_username"], values["smtp_password"] = self.credentials
        return values

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self._gate.set()
        self.controller.stop()

    def hold(self, *, keep_first: bool = False) -> None:
        """Block the next DATA until ``release()``; with ``keep_first`` the message is kept before blocking (only
        the reply is held back: a client killed then has sent a message it never heard was accepted)."""
        self._keep_first = keep_first
        self.entered.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.credentials == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        return AuthResult(success=ok)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # A client that disconnects while DATA is held cancels this handler (aiosmtpd): nothing is kept then,
        # unless hold(keep_first=True) kept it already.
        held = not self._gate.is_set()
        if held and self._keep_first:
            self._keep(envelope)
        if held:
            self.entered.set()
            await asyncio.get_running_loop().run_in_executor(None, self._gate.wait)
        if self.refuse is not None:
            self.refused += 1
            return self.refuse
        if not (held and self._keep_first):
            self._keep(envelope)
        return "250 OK"

    def _keep(self, envelope: Envelope) -> None:
        content = cast(bytes, envelope.original_content or envelope.content)
        message = message_from_bytes(content, policy=policy.default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((str(envelope.mail_from), [str(rcpt) for rcpt in envelope.rcpt_tos]))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:  # noqa: ASYNC109
        """The messages once at least ``count`` have arrived; AssertionError after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < count:
            if loop.time() > deadline:
                raise AssertionError(f"expected {count} message(s) within {timeout} s, got {len(self.messages)}")
            await asyncio.sleep(0.02)
        with self._lock:
            return list(self.messages)

    @staticmethod
    def text(message: EmailMessage) -> str:
        part = message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @staticmethod
    def html(message: EmailMessage) -> str:
        part = message.get_body(preferencelist=("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())


@contextlib.contextmanager
def running_smtp_server(credentials: tuple[str, str] | None = None) -> Iterator[SMTPServer]:
    server = SMTPServer(credentials)
    server.start()
    try:
        yield server
    finally:
        server.stop()
