"""Building a message and handing it on: through SMTP (aiosmtplib), or to the log in development.

A message's ``Message-ID`` is ``<{event id}@{domain of mail_from}>`` and its ``Date`` the event's creation: a
re-delivery of one outbox event is byte-for-byte the same message, which a receiver can recognise as a duplicate.
"""

import logging
import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import aiosmtplib

from service.core.config import Settings
from service.mail.render import Rendered

logger = logging.getLogger(__name__)


def message_id(event_id: uuid.UUID, mail_from: str) -> str:
    domain = parseaddr(mail_from)[1].rpartition("@")[2]
    return f"<{event_id}@{domain}>"


def build_message(
    rendered: Rendered, *, to: str, mail_from: str, event_id: uuid.UUID, created_at: datetime
) -> EmailMessage:
    """A multipart/alternative message: the plain text first, the HTML as the preferred alternative."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(created_at)
    message["Message-ID"] = message_id(event_id, mail_from)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message.set_boundary(f"=_{event_id.hex}")  # not random: a re-delivery is the same bytes
    return message


class Sender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SMTPSender:
    """One connection per message (connect, TLS, AUTH, MAIL, RCPT, DATA, QUIT), each step bounded by the timeout."""

    def __init__(self, settings: Settings) -> None:
        self.hostname = settings.smtp_host
        self.port = settings.effective_smtp_port
        self.use_tls = settings.smtp_tls == "tls"
        self.start_tls = settings.smtp_tls == "starttls"  # required, not opportunistic: no silent plain text
        # An empty value (a compose file passing an unset variable through) means no authentication, as unset does.
        self.username = settings.smtp_username or None
        self.password = (
            settings.smtp_password if settings.smtp_password and settings.smtp_password.get_secret_value() else None
        )
        self.timeout = settings.smtp_timeout.total_seconds()

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password.get_secret_value() if self.password is not None else None,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
        )


class LogSender:
    """Development: the message goes to the log at INFO, text part included, so its links can be followed."""

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        logger.info(
            "mail (log backend, not sent)",
            extra={
                "to": message["To"],
                "subject": message["Subject"],
                "message_id": message["Message-ID"],
                "text": text,
            },
        )


def build_sender(settings: Settings) -> Sender:
    if settings.effective_mail_backend == "smtp":
        return SMTPSender(settings)
    return LogSender()
