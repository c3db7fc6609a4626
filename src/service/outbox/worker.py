"""``service worker``: delivers outbox events from the saq queue on Redis, and sweeps the table for due ones.

Each job is one attempt at one event (outbox/delivery.py): claim the row, send, settle. Every poll interval the
worker also lists due pending rows (new ones whose enqueue was lost, retries whose backoff has passed, rows a
killed worker had claimed once their lease is over) and enqueues them; the job key is the event id, so an event
already queued or running is not queued twice. Run as many workers as you like: a row is claimed by one at a time.
SIGTERM or SIGINT stops it after the jobs in progress (saq's shutdown).
"""

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from service.core.config import Settings
from service.core.db import build_engine, build_sessionmaker
from service.outbox.delivery import Delivery, build_handlers
from service.outbox.runtime import JOB, close_queue, enqueue, open_queue

if TYPE_CHECKING:
    from saq.types import PartialTimersDict

logger = logging.getLogger(__name__)


async def sweep(delivery: Delivery, queue: Any, settings: Settings) -> int:
    """Enqueue every due pending event; how many were newly queued."""
    queued = 0
    for event_id in await delivery.due():
        queued += await enqueue(queue, event_id, settings)
    return queued


async def run(settings: Settings, *, concurrency: int = 10) -> None:
    from saq import Worker

    if not settings.redis_url:
        raise RuntimeError("service worker needs SERVICE_REDIS_URL (without Redis the app delivers in process)")
    engine = build_engine(settings)
    delivery = Delivery(build_sessionmaker(engine), settings, build_handlers(settings))
    queue = open_queue(settings)
    poll = settings.outbox_poll_interval.total_seconds()
    # saq's defaults but the sweep (all four keys: saq's PartialTimersDict still requires them for a type checker).
    timers: PartialTimersDict = {"schedule": 1, "worker_info": 10, "abort": 1, "sweep": max(1, int(poll))}
    sweeper: asyncio.Task[None] | None = None

    async def deliver(ctx: Any, *, event_id: str) -> str:
        return await delivery.deliver(uuid.UUID(event_id))

    async def sweep_forever() -> None:
        while True:
            try:
                queued = await sweep(delivery, queue, settings)
                if queued:
                    logger.info("outbox sweep queued due events", extra={"queued": queued})
            except Exception as exc:  # Redis or the database away for a while: try again next time
                logger.warning("outbox sweep failed", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})
            await asyncio.sleep(poll)

    async def startup(ctx: Any) -> None:
        nonlocal sweeper
        sweeper = asyncio.create_task(sweep_forever(), name="outbox sweep")
        logger.info("outbox worker started", extra={"queue": settings.outbox_queue, "concurrency": concurrency})

    async def shutdown(ctx: Any) -> None:
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    worker = Worker(
        queue,
        functions=[(JOB, deliver)],
        concurrency=concurrency,
        startup=startup,
        shutdown=shutdown,
        # saq frees the key of a job whose worker died once it is past its timeout (the lease): check as often
        # as we sweep, so such an event is queued again soon after its lease ends.
        timers=timers,
        shutdown_grace_period_s=max(1, int(settings.smtp_timeout.total_seconds())),
    )
    try:
        await worker.start()
    finally:
        await close_queue(queue)
        await engine.dispose()
        logger.info("outbox worker stopped")
