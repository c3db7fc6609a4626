"""The two servers under load (the service and the ceiling), started as production runs them.

Each side is a uvicorn master with ``--workers N`` children, started in a session of its own, so that stopping it
(SIGTERM, then SIGKILL of the whole process group after a timeout) can never miss a worker.
"""

import atexit
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness.client import HOST, get_status
from bench.harness.database import Database
from bench.harness.options import REPO
from service.core.config import Settings

UVICORN = Path(sys.executable).parent / "uvicorn"
# The service's own defaults (SERVICE_DATABASE_POOL_SIZE, _MAX_OVERFLOW); the ceiling gets a pool of the same size.
POOL_SIZE: int = Settings.model_fields["database_pool_size"].default
MAX_OVERFLOW: int = Settings.model_fields["database_max_overflow"].default
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CEILING_APP = REPO / "bench" / "ceiling.py"
STAND_IN = "service stand-in"  # what the ceiling side is while bench/ceiling.py does not exist


@dataclass(frozen=True)
class ServerSpec:
    name: str  # "service" or "ceiling"
    command: list[str]
    env: dict[str, str]
    ready_path: str  # answers 200 once the workers serve
    port: int
    description: str  # what runs, for the report
    db_connections: int  # the most PostgreSQL connections it may open


@dataclass(frozen=True)
class Server:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The harness's environment without any SERVICE_/CEILING_ setting of the user's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVICE_", "CEILING_"))}
    return env | extra


def service_env(db: Database, secret: str, **extra: str) -> dict[str, str]:
    return clean_env(SERVICE_DATABASE_URL=db.sqlalchemy_url, SERVICE_SECRET_KEY=secret, **extra)


_mail_sink: subprocess.Popen[bytes] | None = None
_mail_sink_port = 0


def mail_sink_port() -> int:
    """A real SMTP server that accepts and discards every message (aiosmtpd's Sink), started once per harness run:
    the write mix registers users, and each registration mails a verification link (B7) as it would in production,
    so the mail's cost is measured instead of piling up as failed retries."""
    global _mail_sink, _mail_sink_port
    if _mail_sink is None or _mail_sink.poll() is not None:
        _mail_sink_port = free_port()
        command = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"{HOST}:{_mail_sink_port}",
        ]
        _mail_sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603 - our own command
        atexit.register(_mail_sink.terminate)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(_mail_sink_port):
            if time.monotonic() > deadline or _mail_sink.poll() is not None:
                raise RuntimeError("the SMTP sink (python -m aiosmtpd) did not start")
            time.sleep(0.05)
    return _mail_sink_port


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def service_spec(db: Database, secret: str, workers: int, name: str = "service") -> ServerSpec:
    port = free_port()
    command = [str(UVICORN), "--factory", "service.main:create_app", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers), "--no-proxy-headers", "--no-access-log"]
    env = service_env(
        db,
        secret,
        SERVICE_ENVIRONMENT="production",
        SERVICE_LOG_LEVEL="INFO",
        SERVICE_DATABASE_POOL_SIZE=str(POOL_SIZE),
        # The harness logs in its token holders and the write mix registers thousands of users from one address:
        # the login and registration limits (B5) would answer 429 to most of it. The ceiling has no limiter either.
        SERVICE_RATE_LIMITS_ENABLED="false",
        SERVICE_SMTP_HOST=HOST,
        SERVICE_SMTP_PORT=str(mail_sink_port()),
        SERVICE_SMTP_TLS="none",
    )
    what = "service (uvicorn service.main:create_app)"
    return ServerSpec(name, command, env, "/health/live", port, what, workers * (POOL_SIZE + MAX_OVERFLOW))


def ceiling_spec(db: Database, secret: str, workers: int, choice: str) -> ServerSpec:
    """The one place that says what the ceiling is: bench/ceiling.py, or a second service standing in for it."""
    if choice == "service" or (choice == "auto" and not CEILING_APP.exists()):
        spec = service_spec(db, secret, workers, name="ceiling")
        return dataclasses.replace(spec, ready_path="/api/tags", description=STAND_IN)
    port = free_port()
    command = [str(UVICORN), "--factory", "bench.ceiling:create_app", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log"]
    env = clean_env(CEILING_DATABASE_URL=db.dsn, CEILING_SECRET_KEY=secret, CEILING_POOL_SIZE=str(POOL_SIZE))
    what = "ceiling (uvicorn bench.ceiling:create_app)"
    return ServerSpec("ceiling", command, env, "/api/tags", port, what, workers * POOL_SIZE)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}: see {server.log}")
        with contextlib.suppress(OSError):
            if get_status(server.port, server.spec.ready_path) == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"{server.name} did not answer {server.spec.ready_path} in {START_TIMEOUT_S:.0f} s: see {server.log}"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(server: Server) -> None:
    """SIGTERM the master (it stops its workers), then SIGKILL the whole group if anything is left after a timeout."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)
    # once the master is gone, its workers may take a moment more; a master still running gets no more time
    deadline = time.monotonic() + (STOP_TIMEOUT_S if process.poll() is not None else 0)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(process.pid):
        print(f"  {server.name} did not stop in time: SIGKILL", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(spec: ServerSpec, log: Path) -> Iterator[Server]:
    """Start a server, wait until it answers, and stop it on the way out, whatever happens in between."""
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - the virtualenv's uvicorn, arguments built here
            spec.command, env=spec.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(spec, process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        stop(server)
