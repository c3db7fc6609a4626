"""A PostgreSQL server of a test's own, to break on purpose: its own data directory, port and socket directory,
started, stopped, paused and put in recovery by the test. Never the shared server on 5432.

``initdb`` refuses to run as root: as root, every server command runs as the ``postgres`` OS user (``runuser``), in
a directory under /tmp that user owns (pytest's tmp_path is private to root).
"""

import asyncio
import os
import pwd
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg

PG_BIN = Path(os.environ.get("SERVICE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
# Speed over durability against an OS crash (fsync off: a process crash, even an immediate shutdown, keeps all that
# was written, the OS cache survives), and a small footprint. synchronous_commit stays on: off, an immediate
# shutdown loses commits already acknowledged, and the all-or-nothing checks rightly fail.
# hot_standby=off matters only in standby mode, which then refuses every connection (57P03) until promoted.
SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
    "-c max_connections=60 -c shared_buffers=16MB -c hot_standby=off -c log_min_messages=warning"
)


def unavailable_reason() -> str | None:
    """Why a private server cannot be run here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not os.access(PG_BIN / tool, os.X_OK):
            return f"{PG_BIN / tool} not found (set SERVICE_TEST_PG_BIN)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root, and runuser (to run initdb as postgres) is missing"
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root, and there is no {OS_USER!r} OS user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresInstance:
    def __init__(self, base: Path, port: int, run_as: str | None) -> None:
        self.base = base
        self.port = port
        self.run_as = run_as
        self.data = base / "data"
        self.sockets = base / "sockets"
        self.log = base / "postgres.log"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    @classmethod
    async def create(cls, scratch: Path) -> "PostgresInstance":
        if os.geteuid() == 0:
            account = pwd.getpwnam(OS_USER)
            base = Path(tempfile.mkdtemp(prefix="conduit-pg-faults-", dir="/tmp"))
            os.chown(base, account.pw_uid, account.pw_gid)
            instance = cls(base, _free_port(), OS_USER)
        else:
            instance = cls(scratch, _free_port(), None)
        await instance._run("mkdir", "-p", str(instance.sockets))
        await instance._run(
            str(PG_BIN / "initdb"), "-D", str(instance.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        return instance

    async def _run(self, *command: str, check: bool = True) -> str:
        prefix = ("runuser", "-u", self.run_as, "--") if self.run_as else ()
        process = await asyncio.create_subprocess_exec(
            *prefix, *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        if check and process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {text}\n{self.log_tail()}")
        return text

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def _pg_ctl(self, *args: str, check: bool = True) -> str:
        return await self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args, check=check)

    async def start(self, *, wait: bool = True) -> None:
        options = f"-p {self.port} -k {self.sockets} {SERVER_OPTIONS}"
        await self._pg_ctl("-l", str(self.log), "-o", options, "-t", "60", "-w" if wait else "-W", "start")

    async def start_standby(self) -> None:
        """Start in standby mode with hot_standby off: up, but refusing every connection with 57P03 until
        ``promote``. Returns once it refuses that way (not just "connection refused")."""
        await self._run("touch", str(self.data / "standby.signal"))
        await self.start(wait=False)
        for _ in range(600):
            try:
                connection = await self.connect()
            except asyncpg.CannotConnectNowError:
                return
            except OSError:
                await asyncio.sleep(0.05)
                continue
            await connection.close()
            raise RuntimeError("the standby accepted a connection")
        raise RuntimeError(f"the standby did not come up\n{self.log_tail()}")

    async def promote(self) -> None:
        await self._pg_ctl("-w", "-t", "60", "promote")

    async def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        await self._pg_ctl("-m", mode, "-t", "60", "-w" if wait else "-W", "stop")

    async def running(self) -> bool:
        return "server is running" in await self._pg_ctl("status", check=False)

    async def wait_stopped(self) -> None:
        for _ in range(600):
            if not await self.running():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the server did not stop\n{self.log_tail()}")

    async def ensure_running(self) -> None:
        """Whatever an earlier test left behind: running, out of recovery, not paused."""
        self._signal_all(signal.SIGCONT)
        if not await self.running():
            await self.start()
        connection = await self.connect()
        try:
            if await connection.fetchval("SELECT pg_is_in_recovery()"):
                await self.promote()
        finally:
            await connection.close()

    async def connect(self) -> Any:
        """A connection of the test's own (an asyncpg.Connection), outside the app's pools."""
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres", timeout=5)

    @asynccontextmanager
    async def holding_lock(self, table: str) -> AsyncIterator[None]:
        """Another session holds ACCESS EXCLUSIVE on ``table`` (what a migration or a stuck job would do)."""
        connection = await self.connect()
        try:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            yield
            await transaction.rollback()
        finally:
            await connection.close()

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _children(self, postmaster: int) -> list[int]:
        """Every process the postmaster forked (backends, checkpointer, WAL writer...). Each of them calls setsid(),
        so no process group holds the instance: they are found by their parent."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return children

    def _signal_all(self, sig: signal.Signals) -> None:
        """Signal this instance's postmaster, then its children: once stopped, it forks none that would be missed."""
        postmaster = self._postmaster_pid()
        if postmaster is None:
            return
        with suppress(ProcessLookupError):
            os.kill(postmaster, sig)
        for pid in self._children(postmaster):  # listed after the postmaster has the signal
            with suppress(ProcessLookupError):
                os.kill(pid, sig)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the postmaster and every process it forked, this instance's only (a hung server: connections
        stay open, new ones are accepted by the kernel, nothing answers)."""
        self._signal_all(signal.SIGSTOP)
        try:
            yield
        finally:
            self._signal_all(signal.SIGCONT)

    async def destroy(self) -> None:
        self._signal_all(signal.SIGCONT)
        await self._pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.base, ignore_errors=True)
