"""The outbox inside the app: who delivers after a commit, and the outbox figures in /metrics.

With ``SERVICE_REDIS_URL`` the app only enqueues each committed event's id on the saq queue (job key = the id, so
duplicates collapse) and ``service worker`` delivers. Without it, an in-process deliverer owned by the lifespan
delivers right after the commit and, at start and every poll interval, sweeps what is due (retries, and rows an
earlier process left pending). Either way the row is the truth: a lost job or a crash between commit and enqueue
only delays an event until the next sweep.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.core.config import Settings
from service.core.db import Database
from service.outbox import service as outbox_service
from service.outbox.delivery import Delivery, InProcessDeliverer, build_handlers
from service.outbox.models import OutboxStatus
from service.outbox.service import DISPATCHER, Stats

logger = logging.getLogger(__name__)

JOB = "outbox.deliver"  # the saq function name (outbox/worker.py)


def open_queue(settings: Settings) -> Any:
    """The saq queue on Redis; ``await queue.disconnect()`` when done."""
    from saq import Queue

    if not settings.redis_url:  # pragma: no cover - callers check first
        raise RuntimeError("the outbox queue needs SERVICE_REDIS_URL")
    return Queue.from_url(settings.redis_url, name=settings.outbox_queue)


async def close_queue(queue: Any) -> None:
    try:
        await queue.disconnect()
    except Exception as exc:  # Redis away at shutdown: nothing is left to flush (the rows are the truth)
        logger.warning("outbox: closing the queue failed", extra={"error": type(exc).__name__})


async def enqueue(queue: Any, event_id: uuid.UUID, settings: Settings) -> bool:
    """Queue one delivery; False if a job for this event is already queued or running (the key collapses it)."""
    job = await queue.enqueue(
        JOB,
        key=str(event_id),
        event_id=str(event_id),
        timeout=max(1, int(settings.outbox_lease.total_seconds())),  # saq sweeps a job stuck longer than this
        retries=1,  # one attempt per job: retries are the row's (backoff, dead letters), not saq's
        ttl=-1,  # nothing kept once done: the row holds the outcome
    )
    return job is not None


class QueueDispatcher:
    """With Redis: after a commit, enqueue each event's id. Failing to (Redis away) loses nothing: the worker's
    sweep finds the row."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = open_queue(settings)
        self.tasks: set[asyncio.Task[None]] = set()

    def notify(self, event_ids: Sequence[uuid.UUID]) -> None:
        for event_id in event_ids:
            task = asyncio.create_task(self._enqueue(event_id), name=f"outbox enqueue {event_id}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _enqueue(self, event_id: uuid.UUID) -> None:
        try:
            await enqueue(self.queue, event_id, self.settings)
        except Exception as exc:
            logger.warning(
                "outbox: enqueue failed, the worker's sweep will deliver it",
                extra={"event_id": str(event_id), "error": type(exc).__name__},
            )

    async def stop(self, grace: float) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace)
        await close_queue(self.queue)


class OutboxCollector(Collector):
    """The outbox figures, from the last refresh of the table (every poll interval): they are the same whichever
    process is scraped, and cover the worker's deliveries too."""

    def __init__(self) -> None:
        self.stats: Stats | None = None

    def describe(self) -> list[Metric]:
        return []  # registration must not run a collect (there is nothing to read yet)

    def collect(self) -> Iterator[Metric]:
        if self.stats is None:
            return
        events = GaugeMetricFamily(
            "outbox_events",
            "Outbox events by status: pending is the queue depth, dead the dead letters",
            labels=["status"],
        )
        for status in OutboxStatus:
            events.add_metric([status.value], self.stats.counts[status])
        yield events
        yield CounterMetricFamily(
            "outbox_retries",
            "Delivery attempts beyond each event's first (retries), over every event kept",
            value=self.stats.retries,
        )


class OutboxRuntime:
    """Started and stopped by the app's lifespan (main.py)."""

    def __init__(self, settings: Settings, database: Database, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.database = database
        self.registry = registry
        self.collector = OutboxCollector()
        self.deliverer: InProcessDeliverer | None = None
        self.dispatcher: QueueDispatcher | None = None
        self.refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        settings = self.settings
        if settings.redis_url:
            self.dispatcher = QueueDispatcher(settings)
            dispatcher: outbox_service.Dispatcher = self.dispatcher
        else:
            delivery = Delivery(self.database.writer, settings, build_handlers(settings))
            self.deliverer = InProcessDeliverer(delivery, settings.outbox_poll_interval)
            self.deliverer.start()
            dispatcher = self.deliverer
        self.database.writer.configure(info={DISPATCHER: dispatcher})
        self.registry.register(self.collector)
        self.refresher = asyncio.create_task(self._refresh(), name="outbox metrics")
        logger.info("outbox started", extra={"delivery": "queue" if settings.redis_url else "in process"})

    async def refresh(self) -> None:
        async with self.database.reader() as connection:
            self.collector.stats = await outbox_service.stats(connection)

    async def _refresh(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database may be away: the figures stay as they were
                logger.debug("outbox metrics not refreshed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self.settings.outbox_poll_interval.total_seconds())

    async def stop(self) -> None:
        grace = self.settings.smtp_timeout.total_seconds()
        if self.refresher is not None:
            self.refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresher
        with contextlib.suppress(KeyError):
            self.registry.unregister(self.collector)
        if self.deliverer is not None:
            await self.deliverer.stop(grace)
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
