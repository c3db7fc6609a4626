"""Prometheus metrics: request counters and latencies, the database pool, the process.

Labels are bounded: the route template (never the raw path), the method and the status code; ``pool`` names an
engine's pool.

Two modes, chosen when prometheus_client is imported (as it is itself):

- one process (the default, and each test app): a registry per app, nothing global, so tests can build many apps;
  pool gauges are read from the pool at scrape time, at no cost per request.
- several workers: with ``PROMETHEUS_MULTIPROC_DIR`` set (``service serve --workers N`` sets it up itself, see
  :func:`prepare_multiprocess`), every worker writes its values to files there and ``/metrics``, whichever worker
  answers, sums them all. A worker's pool and process figures are then written by the worker itself every
  :data:`REFRESH_SECONDS` (another worker cannot read them), and a worker that has exited stops counting in the
  live gauges at the next scrape.
"""

import asyncio
import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    multiprocess,
    platform_collector,
    process_collector,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, QueuePool

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker writes its pool and process figures in multiprocess mode: a few file writes a second at most.
REFRESH_SECONDS = 1.0
# Latency buckets for an API whose requests take milliseconds, with room for slow outliers.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

POOL_GAUGES = {
    "size": "Connections the pool keeps (its configured size)",
    "max_overflow": "Connections the pool may open beyond its size",
    "connections": "Connections open in the pool, idle or in use",
    "checked_out": "Connections in use by a request",
    "overflow": "Connections open beyond the pool's size",
    "waiters": "Requests waiting for a connection (the pool is exhausted)",
}
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_mode() -> bool:
    """Whether this process writes its values to PROMETHEUS_MULTIPROC_DIR (prometheus_client decided at import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def prepare_multiprocess(workers: int) -> None:
    """Called by ``service serve`` before the workers start, so that they inherit the setting.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, that directory is used, emptied of a previous run's files (the values of
    processes long gone would otherwise be summed in). Unset, one worker needs nothing; several get a fresh temporary
    directory, removed when ``serve`` exits.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return
    if workers < 2:
        return
    path = tempfile.mkdtemp(prefix="conduit-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_exited(path: str) -> None:
    """mark_process_dead for every process that has written live gauges and is gone (crashed, restarted, stopped)."""
    pids = {int(match[1]) for name in os.listdir(path) if (match := _LIVE_GAUGE_FILE.match(name))}
    mark_process_dead: Any = multiprocess.mark_process_dead  # untyped in prometheus_client
    for pid in pids:
        if not _alive(pid):
            mark_process_dead(pid, path)


class LiveMultiProcessCollector(Collector):
    """Every worker's values, summed; the live gauges of exited workers are dropped first."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self.path = path
        files: Any = multiprocess.MultiProcessCollector  # untyped in prometheus_client
        self.files = files(None, path)
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        forget_exited(self.path)
        metrics: Iterable[Metric] = self.files.collect()
        return metrics


def pool_figures(pool: Pool) -> dict[str, float] | None:
    """The pool's occupancy, or None for a pool without a size (SQLite in memory, NullPool)."""
    if not isinstance(pool, QueuePool):
        return None
    # The asyncio queue underneath is made on first use; its waiting getters are the requests without a connection.
    queue = vars(pool._pool).get("_queue")
    waiters = sum(1 for getter in getattr(queue, "_getters", ()) if not getter.done())
    checked_out = pool.checkedout()
    return {
        "size": pool.size(),
        "max_overflow": max(0, pool._max_overflow),  # -1 means unlimited: reported as 0, which no alert divides by
        "connections": pool.checkedin() + checked_out,
        "checked_out": checked_out,
        "overflow": max(0, pool.overflow()),  # negative while the pool has not opened all its connections yet
        "waiters": waiters,
    }


class PoolCollector(Collector):
    """Reads the watched engines' pools at scrape time (one process): no cost per request."""

    def __init__(self) -> None:
        self.engines: dict[str, AsyncEngine] = {}

    def collect(self) -> Iterator[Metric]:
        figures = {name: pool_figures(engine.sync_engine.pool) for name, engine in self.engines.items()}
        known = {name: found for name, found in figures.items() if found is not None}
        if not known:
            return
        for key, documentation in POOL_GAUGES.items():
            family = GaugeMetricFamily(f"db_pool_{key}", documentation, labels=["pool"])
            for name, found in known.items():
                family.add_metric([name], found[key])
            yield family


class PoolWatch:
    """What :meth:`Metrics.watch_pool` returns; ``aclose()`` at the lifespan's end."""

    def __init__(self, metrics: "Metrics", name: str, engine: AsyncEngine) -> None:
        self.metrics = metrics
        self.name = name
        self.engine = engine
        self.task: asyncio.Task[None] | None = None
        if metrics.pool_collector is not None:
            metrics.pool_collector.engines[name] = engine
        else:
            self.task = asyncio.create_task(self._refresh(), name=f"metrics: pool {name}")

    async def _refresh(self) -> None:
        metrics = self.metrics
        while True:
            try:
                metrics.write_process_figures()
                found = pool_figures(self.engine.sync_engine.pool)
                if found is not None:
                    for key, value in found.items():
                        metrics.pool_gauges[key].labels(self.name).set(value)
            except Exception as exc:  # figures missing for a second beat a refresh that stops for good
                logger.warning("metrics: refresh failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(REFRESH_SECONDS)

    async def aclose(self) -> None:
        if self.metrics.pool_collector is not None:
            self.metrics.pool_collector.engines.pop(self.name, None)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        # Multiprocess mode: the values live in files, the metrics in no registry (two apps in one process would
        # clash there), and /metrics reads the files. One process: everything in this app's own registry.
        own = None if self.multiprocess else CollectorRegistry()
        self.requests = Counter("http_requests", "HTTP requests answered", ["method", "route", "status"], registry=own)
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=BUCKETS,
            registry=own,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress", "HTTP requests being answered", multiprocess_mode="livesum", registry=own
        )
        self.pool_collector: PoolCollector | None = None
        self.pool_gauges: dict[str, Gauge] = {}
        if own is not None:
            self.registry = own
            process_collector.ProcessCollector(registry=own)
            platform_collector.PlatformCollector(registry=own)
            gc_collector.GCCollector(registry=own)
            self.pool_collector = PoolCollector()
            own.register(self.pool_collector)
            return
        self.registry = CollectorRegistry()
        LiveMultiProcessCollector(self.registry, os.environ[MULTIPROC_ENV])
        platform_collector.PlatformCollector(registry=self.registry)  # the same in every worker
        self.pool_gauges = {
            key: Gauge(f"db_pool_{key}", doc, ["pool"], multiprocess_mode="livesum", registry=None)
            for key, doc in POOL_GAUGES.items()
        }
        # The process figures of every live worker, summed (what the container uses); CPU time as a counter that
        # keeps the share of exited workers, so rate() over it stays right across a worker's restart.
        self._process = process_collector.ProcessCollector(registry=None)
        self._cpu_seen = 0.0
        self.cpu_seconds = Counter("process_cpu_seconds", "User and system CPU time of the workers", registry=None)
        self.resident_memory = Gauge(
            "process_resident_memory_bytes",
            "Resident memory of the live workers",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.open_fds = Gauge(
            "process_open_fds", "Open file descriptors of the live workers", multiprocess_mode="livesum", registry=None
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def watch_pool(self, engine: AsyncEngine, name: str = "primary") -> PoolWatch:
        """Export the engine's pool gauges until ``aclose()``; call it from the lifespan (a running loop)."""
        return PoolWatch(self, name, engine)

    def write_process_figures(self) -> None:
        """Multiprocess mode: this worker's RSS, descriptors and CPU time into its files."""
        for family in self._process.collect():
            for sample in family.samples:
                if sample.name == "process_resident_memory_bytes":
                    self.resident_memory.set(sample.value)
                elif sample.name == "process_open_fds":
                    self.open_fds.set(sample.value)
                elif sample.name == "process_cpu_seconds_total" and sample.value > self._cpu_seen:
                    self.cpu_seconds.inc(sample.value - self._cpu_seen)
                    self._cpu_seen = sample.value
