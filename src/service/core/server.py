"""``service serve``: uvicorn, run so that SIGTERM drains (README "Graceful shutdown"), with one worker or several.

On SIGTERM each worker
1. answers ``/health/ready`` with 503 at once (the lifespan state gets ``DRAINING``, which uvicorn copies into every
   request's scope: nothing is added to a request's path), and keeps serving normally for ``shutdown_delay``, the
   time a load balancer or the Kubernetes endpoints controller takes to stop sending;
2. then closes its listener: new connections are refused, in-flight requests get ``shutdown_timeout`` to finish
   (uvicorn's ``timeout_graceful_shutdown``; the rest are cancelled), the lifespan shutdown disposes of the engine;
3. exits 0. Ctrl-C (SIGINT) skips the delay; a second signal cuts it short, a second Ctrl-C the wait for requests.

With several workers, uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``) does not fit: its workers run
the plain ``uvicorn.Server``, which stops accepting on SIGTERM at once, and the parent keeps its copy of the listening
socket open until every worker has gone, so the kernel goes on completing handshakes nobody accepts and resets them
when the parent exits. ``Supervisor`` below keeps uvicorn's worker processes (spawned, health-checked over a pipe)
with the draining server in them, and closes the parent's copy of the socket first: the listener then lives on in the
workers only, and closes when the last of them stops accepting.
"""

import logging
import os
import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Process

from service.core.config import Settings
from service.core.logging import configure_logging

APP = "service.main:create_app"
DRAINING = "draining"  # key in the lifespan state: True once SIGTERM has arrived (ops/router.py `ready` reads it)
_POLL = 0.1  # seconds: how often the supervisor looks at its signals
_HEALTHCHECK_EVERY = 5  # polls between two health checks of the workers (uvicorn's supervisor: every 0.5 s)

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM turned into: readiness 503, serve ``shutdown_delay`` longer, then shut down."""

    def __init__(self, config: uvicorn.Config, shutdown_delay: float) -> None:
        super().__init__(config)
        self.shutdown_delay = shutdown_delay
        self.drain_deadline: float | None = None
        self._drain_logged = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only flags are set here, the log line and the deadline check are in on_tick.
        # Nothing is recorded for uvicorn to re-raise after the shutdown (1 worker would exit 143): a drain exits 0.
        if self.started:
            self.lifespan.state[DRAINING] = True
        if sig == signal.SIGTERM and self.started and not self.should_exit and self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + self.shutdown_delay
        elif sig == signal.SIGINT and self.should_exit:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            if not self._drain_logged:
                self._drain_logged = True
                logger.info(
                    "shutdown: draining, readiness 503; serving until the delay ends",
                    extra={"delay_s": self.shutdown_delay, "pid": os.getpid()},
                )
            if time.monotonic() >= self.drain_deadline:
                self.should_exit = True
        return await super().on_tick(counter)


class _Worker(Process):
    """uvicorn's worker process (spawned, answering the parent's health pings), running a ``DrainingServer``."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], shutdown_delay: float) -> None:
        self.shutdown_delay = shutdown_delay
        super().__init__(config, sockets)

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config, self.shutdown_delay)
        return self._server


class Supervisor:
    """Keeps ``config.workers`` workers on a socket of the parent's; on SIGTERM or SIGINT drains them all. ``run``
    returns the exit status: 0 when every worker exited 0."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, shutdown_delay: float) -> None:
        self.config = config
        self.sock = sock
        self.shutdown_delay = shutdown_delay
        self.workers: list[_Worker] = []
        self.signals: list[int] = []

    def _spawn(self) -> _Worker:
        worker = _Worker(self.config, [self.sock], self.shutdown_delay)
        worker.start()
        return worker

    def _keep_alive(self) -> bool:
        """Replace a worker that died or stopped answering; False when one failed to start (it would again)."""
        for index, worker in enumerate(self.workers):
            if worker.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            worker.kill()
            worker.join()
            if worker.exitcode == STARTUP_FAILURE:
                logger.error("worker failed to start, stopping", extra={"pid": worker.pid})
                return False
            logger.warning("worker died, starting another", extra={"pid": worker.pid, "exit_code": worker.exitcode})
            self.workers[index] = self._spawn()
        return True

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Only recorded here (a handler may interrupt anything); the loop below acts on it.
            signal.signal(sig, lambda number, frame: self.signals.append(number))
        logger.info("supervisor started", extra={"pid": os.getpid(), "workers": self.config.workers})
        self.workers = [self._spawn() for _ in range(self.config.workers)]
        healthy = True
        polls = 0
        while healthy and not self.signals:
            time.sleep(_POLL)
            polls += 1
            if polls % _HEALTHCHECK_EVERY == 0:
                healthy = self._keep_alive()
        # The workers hold the listener from here on: it closes when the last of them stops accepting, and the
        # kernel completes no handshake that nobody will accept.
        self.sock.close()
        forwarded = 0
        while any(worker.exitcode is None for worker in self.workers):
            # SIGTERM whatever came (like uvicorn's supervisor): Ctrl-C reaches the workers from the terminal itself,
            # and a second signal cuts their delay short.
            for _ in range(max(len(self.signals), 1) - forwarded):
                for worker in self.workers:
                    if worker.exitcode is None and worker.pid is not None:
                        os.kill(worker.pid, signal.SIGTERM)
                forwarded += 1
            time.sleep(_POLL)
        for worker in self.workers:
            worker.join()
        failed = {worker.pid: worker.exitcode for worker in self.workers if worker.exitcode != 0}
        if failed or not healthy:
            logger.error("supervisor stopped, not every worker exited cleanly", extra={"exit_codes": failed})
            return STARTUP_FAILURE if not healthy else 1
        logger.info("supervisor stopped", extra={"pid": os.getpid()})
        return 0


def serve(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """Serve the API until SIGTERM or SIGINT, drained as the module docstring says; return the exit status."""
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # our middleware writes one structured line per request
        proxy_headers=False,  # the app reads X-Forwarded-For itself, from SERVICE_TRUSTED_PROXIES only
        log_config=None,  # create_app configures logging
        # Annotated int by uvicorn, used as asyncio.wait_for's timeout: any number of seconds works.
        timeout_graceful_shutdown=settings.shutdown_timeout.total_seconds(),  # type: ignore[arg-type]
    )
    delay = settings.shutdown_delay.total_seconds()
    if workers == 1:
        server = DrainingServer(config, delay)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    configure_logging(settings)  # the parent's own lines; each worker's app configures its process
    return Supervisor(config, config.bind_socket(), delay).run()
