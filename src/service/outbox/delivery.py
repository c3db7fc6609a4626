"""Delivering one event (claim, hand to its handler, settle), and the in-process deliverer used without Redis.

Handlers are keyed by the event's ``kind`` and are idempotent by the event's id: the e-mail handler builds the
same message (same Message-ID) every time it is given the same event.
"""

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.config import Settings
from service.core.db import WRITE_INTENT, utcnow
from service.mail.render import TEMPLATES, TemplateError, render
from service.mail.sender import Sender, build_message, build_sender
from service.outbox import service as outbox_service
from service.outbox.models import OutboxStatus
from service.outbox.service import Claimed

logger = logging.getLogger(__name__)

Handler = Callable[[Claimed], Awaitable[None]]
Outcome = Literal["delivered", "retry", "dead", "skipped"]
SWEEP_BATCH = 100


class Undeliverable(Exception):
    """The event itself is wrong (unknown kind or template, a missing value): retrying cannot help, it is dead."""


class EmailHandler:
    """``kind="email"``, payload ``{"to": address, "template": name, "context": {placeholder: str}}``."""

    def __init__(self, sender: Sender, mail_from: str, templates: Path = TEMPLATES) -> None:
        self.sender, self.mail_from, self.templates = sender, mail_from, templates

    async def __call__(self, event: Claimed) -> None:
        payload = event.payload
        to, template, context = payload.get("to"), payload.get("template"), payload.get("context", {})
        if not isinstance(to, str) or not isinstance(template, str) or not isinstance(context, dict):
            raise Undeliverable("an email payload needs 'to' and 'template' strings and a 'context' object")
        try:
            rendered = render(template, context, self.templates)
        except TemplateError as exc:
            raise Undeliverable(str(exc)) from None
        message = build_message(
            rendered, to=to, mail_from=self.mail_from, event_id=event.id, created_at=event.created_at
        )
        await self.sender.send(message)


def build_handlers(settings: Settings, sender: Sender | None = None, templates: Path = TEMPLATES) -> dict[str, Handler]:
    return {"email": EmailHandler(sender or build_sender(settings), settings.mail_from, templates)}


def _describe(exc: BaseException) -> str:
    """What last_error keeps: the exception's type and message (an SMTP reply, a template name), no payload."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Delivery:
    """Everything one delivery needs; shared by the in-process deliverer and the saq worker."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, handlers: Mapping[str, Handler]
    ) -> None:
        self.sessionmaker, self.settings, self.handlers = sessionmaker, settings, handlers
        # The send must end well inside the lease, so that no other deliverer claims the event while it runs.
        self.bound = settings.outbox_lease.total_seconds() * 0.8

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session, session.begin():
            await session.connection(execution_options={WRITE_INTENT: True})  # SQLite: BEGIN IMMEDIATE
            yield session

    async def due(self, limit: int = SWEEP_BATCH) -> list[uuid.UUID]:
        async with self.sessionmaker() as session, session.begin():
            return await outbox_service.due_ids(session, utcnow(), limit)

    async def deliver_due(self, limit: int = SWEEP_BATCH) -> list[Outcome]:
        """One sweep: an attempt at every event due now (up to ``limit``), one after the other."""
        return [await self.deliver(event_id) for event_id in await self.due(limit)]

    async def deliver(self, event_id: uuid.UUID) -> Outcome:
        """One attempt at one event: claim it (skipped if it is not a due pending one), send, settle."""
        async with self._writing() as session:
            claimed = await outbox_service.claim(session, event_id, utcnow(), self.settings.outbox_lease)
        if claimed is None:
            return "skipped"
        handler = self.handlers.get(claimed.kind)
        try:
            if handler is None:
                raise Undeliverable(f"no handler for kind {claimed.kind!r}")
            async with asyncio.timeout(self.bound):
                await handler(claimed)
        except Exception as exc:
            return await self._failed(claimed, exc)
        async with self._writing() as session:
            await outbox_service.mark_delivered(session, event_id, utcnow())
        logger.info(
            "outbox event delivered",
            extra={"event_id": str(event_id), "kind": claimed.kind, "attempt": claimed.attempts},
        )
        return "delivered"

    async def _failed(self, claimed: Claimed, exc: Exception) -> Outcome:
        error = _describe(exc)
        settings = self.settings
        async with self._writing() as session:
            status = await outbox_service.mark_failed(
                session,
                claimed,
                error,
                utcnow(),
                max_attempts=settings.outbox_max_attempts,
                backoff_base=settings.outbox_backoff_base,
                backoff_max=settings.outbox_backoff_max,
                permanent=isinstance(exc, Undeliverable),
            )
        fields = {"event_id": str(claimed.id), "kind": claimed.kind, "attempt": claimed.attempts, "error": error}
        if status is OutboxStatus.DEAD:
            logger.error("outbox event dead", extra=fields)
            return "dead"
        logger.warning("outbox event failed, will retry", extra=fields)
        return "retry"


class InProcessDeliverer:
    """Without Redis: delivers in this process, right after each commit, and sweeps due events (retries, and rows
    left pending by an earlier process) at start and every poll interval. One task, owned by the app's lifespan.
    """

    def __init__(self, delivery: Delivery, poll_interval: timedelta) -> None:
        self.delivery = delivery
        self.poll = poll_interval.total_seconds()
        self.queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.on_sweep: Callable[[], Awaitable[None]] | None = None  # run after each sweep (metrics refresh)

    def notify(self, event_ids: Sequence[uuid.UUID]) -> None:
        for event_id in event_ids:
            self.queue.put_nowait(event_id)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="outbox-deliverer")

    async def stop(self, grace: float) -> None:
        """Let the delivery in progress finish (up to ``grace`` seconds), then stop; what is left stays pending."""
        if self.task is None:
            return
        self.queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.task = None

    async def _run(self) -> None:
        while True:
            await self._guarded(self._sweep)
            deadline = asyncio.get_running_loop().time() + self.poll
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    event_id = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
                if event_id == _STOP:
                    return
                await self._guarded(functools.partial(self.delivery.deliver, event_id))

    async def _sweep(self) -> None:
        await self.delivery.deliver_due()
        if self.on_sweep is not None:
            await self.on_sweep()

    async def _guarded(self, step: Callable[[], Awaitable[object]]) -> None:
        # The database may be away for a while: log and carry on; every event stays in its row meanwhile.
        try:
            await step()
        except Exception as exc:
            logger.warning("outbox deliverer: %s", _describe(exc))


_STOP = uuid.UUID(int=0)  # put on the queue by stop(): no event has this id (uuid4 never makes it)
