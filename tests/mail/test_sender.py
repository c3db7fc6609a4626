"""The e-mail sender: with the SMTP client mocked (what is handed to aiosmtplib: TLS mode, port, credentials,
timeout, the message), against the real aiosmtpd server (AUTH, the message parsed back), the log backend, the
renderer and the settings."""

import logging
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from pydantic import ValidationError

from service.core.config import load_settings
from service.mail.render import Rendered, TemplateError, render
from service.mail.sender import LogSender, SMTPSender, build_message, build_sender
from tests.mail_server import running_smtp_server
from tests.outbox.support import TEMPLATES

EVENT = uuid.UUID("2f1c9c4e-8a55-4f57-9d0c-5b8f3e7a1d22")
CREATED = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def _message(mail_from: str = "Conduit <no-reply@conduit.test>") -> EmailMessage:
    rendered = render("outbox_test", {"name": "Jake", "link": "https://app.test/v?token=abc"}, TEMPLATES)
    return build_message(rendered, to="jake@example.com", mail_from=mail_from, event_id=EVENT, created_at=CREATED)


class FakeSend:
    def __init__(self) -> None:
        self.calls: list[tuple[EmailMessage, dict[str, Any]]] = []

    async def __call__(self, message: EmailMessage, **kwargs: Any) -> tuple[dict[str, Any], str]:
        self.calls.append((message, kwargs))
        return {}, "250 OK"


@pytest.fixture
def fake_send(monkeypatch: pytest.MonkeyPatch) -> FakeSend:
    fake = FakeSend()
    monkeypatch.setattr(aiosmtplib, "send", fake)  # the module sender.py calls through
    return fake


@pytest.mark.parametrize(
    ("tls", "port", "use_tls", "start_tls"),
    [("tls", 465, True, False), ("starttls", 587, False, True), ("none", 25, False, False)],
)
async def test_tls_mode_picks_the_port_and_the_handshake(
    fake_send: FakeSend, tls: str, port: int, use_tls: bool, start_tls: bool
) -> None:
    settings = load_settings(environment="test", mail_backend="smtp", smtp_host="mail.test", smtp_tls=tls)
    await SMTPSender(settings).send(_message())
    ((message, kwargs),) = fake_send.calls
    assert kwargs == {
        "hostname": "mail.test",
        "port": port,
        "username": None,
        "password": None,
        "use_tls": use_tls,
        "start_tls": start_tls,  # STARTTLS is required, never opportunistic
        "timeout": 10.0,
    }
    assert message["Message-ID"] == f"<{EVENT}@conduit.test>"


async def test_credentials_timeout_and_explicit_port(fake_send: FakeSend) -> None:
    settings = load_settings(
        environment="test",
        mail_backend="smtp",
        smtp_port=2525,
        smtp_username="mailer",
        smtp_password="s3cret-pass",
        smtp_timeout="2.5",
    )
    sender = build_sender(settings)
    assert isinstance(sender, SMTPSender)
    await sender.send(_message())
    ((_, kwargs),) = fake_send.calls
    assert (kwargs["port"], kwargs["username"], kwargs["password"], kwargs["timeout"]) == (
        2525,
        "mailer",
        "s3cret-pass",
        2.5,
    )


def test_the_message_has_both_parts_and_stable_headers() -> None:
    message = _message()
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]  # the last is the preferred alternative
    assert message["Date"] == "Thu, 03 Dec 2026 09:30:00 +0000"  # the event's creation: a re-delivery is the same
    assert bytes(message) == bytes(_message())


async def test_real_server_with_auth_receives_the_message() -> None:
    with running_smtp_server(credentials=("mailer", "s3cret-pass")) as server:
        settings = load_settings(environment="test", mail_from="Conduit <no-reply@conduit.test>", **server.settings())
        await SMTPSender(settings).send(_message())
        (received,) = await server.wait_for(1)
        assert received["Message-ID"] == f"<{EVENT}@conduit.test>"
        assert received["Subject"] == "Hello Jake, welcome to Conduit"
        assert received["From"] == "Conduit <no-reply@conduit.test>"
        text = server.text(received).replace("\r\n", "\n")
        assert text == "Hi Jake,\n\nFollow https://app.test/v?token=abc to confirm.\n"
        assert '<a href="https://app.test/v?token=abc">' in server.html(received)
        assert len(server.messages) == 1


async def test_an_unreachable_server_fails_within_the_timeout() -> None:
    with running_smtp_server() as server:
        settings = load_settings(environment="test", **server.settings())
    # Stopped: the port refuses connections.
    with pytest.raises((aiosmtplib.SMTPConnectError, OSError)):
        await SMTPSender(settings).send(_message())


async def test_the_log_backend_logs_the_message_at_info(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environment="development", secret_key="x" * 40)
    assert isinstance(build_sender(settings), LogSender)
    with caplog.at_level(logging.INFO, logger="service.mail.sender"):
        await LogSender().send(_message())
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    fields = vars(record)
    assert fields["to"] == "jake@example.com"
    assert fields["subject"] == "Hello Jake, welcome to Conduit"
    assert fields["message_id"] == f"<{EVENT}@conduit.test>"
    assert "https://app.test/v?token=abc" in fields["text"]  # a developer follows the link from the log


def test_mail_settings() -> None:
    assert load_settings(environment="test").effective_mail_backend == "log"
    production = load_settings(environment="production", secret_key="k" * 48)
    assert production.effective_mail_backend == "smtp"
    with pytest.raises(ValidationError, match="refused in production"):
        load_settings(environment="production", secret_key="k" * 48, mail_backend="log")
    with pytest.raises(ValidationError, match="mail_from"):
        load_settings(environment="test", mail_from="no address")
    with pytest.raises(ValidationError, match="smtp_timeout"):
        load_settings(environment="test", smtp_timeout=0)
    assert "s3cret" not in repr(load_settings(environment="test", smtp_password="s3cret"))


def test_render_escapes_html_only_and_keeps_the_subject_on_one_line() -> None:
    rendered = render(
        "outbox_test", {"name": "A & B\r\nBcc: x@evil.test", "link": "https://x.test/?a=1&b=2"}, TEMPLATES
    )
    assert rendered.subject == "Hello A & B Bcc: x@evil.test, welcome to Conduit"  # no header injection
    assert "https://x.test/?a=1&b=2" in rendered.text
    assert 'href="https://x.test/?a=1&amp;b=2"' in rendered.html
    assert "A &amp; B" in rendered.html
    assert isinstance(rendered, Rendered)


@pytest.mark.parametrize(
    ("template", "context", "error"),
    [
        ("outbox_test", {"name": "Jake"}, "needs a value for 'link'"),
        ("missing", {}, "no template missing.subject.txt"),
        ("../outbox_test", {}, "invalid template name"),
    ],
)
def test_render_errors(template: str, context: dict[str, str], error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        render(template, context, TEMPLATES)
