# ruff: noqa: T201 - a command-line script: its output is the report
"""``make scale-test``: three instances of the service behind nginx, sharing PostgreSQL (through PgBouncer in
transaction pooling mode) and Redis, all on loopback, under a mixed read/write load. Checks:

(a) no failed request over the whole run (every response 2xx, no transport error);
(b) a logout, and an admin's suspension, on instance 1 refuse the token on instances 2 and 3 at the next request;
(c) rate limits are shared: login attempts spread over the three instances hit the configured total, not 3x;
(d) one instance restarted under load (SIGTERM, drain, start again) costs no failed request through nginx;
(e) PostgreSQL's connections to the database stay within PgBouncer's pool as instances go from 1 to 3.

nginx routes to the instances whose ``/health/ready`` says 200: a small endpoints controller here polls them and
reloads nginx when the set changes, as the Kubernetes endpoints controller and an ingress do. On SIGTERM an instance
answers 503 there while it keeps serving (SERVICE_SHUTDOWN_DELAY), so it leaves nginx before it stops accepting.
nginx's passive health (max_fails, fail_timeout, proxy_next_upstream for connection errors on idempotent requests)
is the net for an instance that dies without notice.

Everything is the test's own and removed at the end: a database on the shared PostgreSQL, Redis keys under a
prefix of its own, processes, a temporary directory. Prints a summary; exits 1 on any violation.
"""

import argparse
import asyncio
import contextlib
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

BIN = Path(sys.executable).parent
INSTANCES = 3
PGBOUNCER_POOL = 10  # server connections PgBouncer opens to the database
APP_POOL = 10  # client connections each instance pools (to PgBouncer)
SHUTDOWN_DELAY_S = 3.0  # readiness 503 while serving: longer than the controller's poll plus an nginx reload
CONTROLLER_POLL_S = 0.25
ACCOUNT_FAILURES = 10  # SERVICE_RATE_LIMIT_LOGIN_ACCOUNT_FAILURES per 15 minutes (the default)
ADDRESS_LOGINS = 30  # SERVICE_RATE_LIMIT_LOGIN_ADDRESS per hour (lowered from 100 so the check is short)
PASSWORD = "scale-test-password"  # noqa: S105 - accounts of a throwaway database
SEED_USERS = 12
SEED_ARTICLES = 4  # per seed user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[scale-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cpu_seconds(roots: list[int]) -> float:
    """CPU time (user + system) of these processes and all their descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    wanted, todo = set(roots), list(roots)
    while todo:
        pid = todo.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in wanted:
                wanted.add(child)
                todo.append(child)
    return sum(cpu.get(pid, 0.0) for pid in wanted)


@dataclass
class Stats:
    """What a load phase saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    upstreams: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    resent: int = 0  # requests sent again after a keep-alive connection closed unanswered
    database: str = ""  # what PgBouncer counted during the phase
    cpu: str = ""  # CPU time a request cost, per component
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the load generator's own CPU time

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def merge(self, other: "Stats") -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.upstreams.update(other.upstreams)
        self.failures += other.failures
        self.resent += other.resent
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


class Stack:
    """The processes on loopback: PgBouncer, the instances, nginx; and the database and Redis keys they use."""

    def __init__(self, pg_url: str, redis_url: str) -> None:
        self.pg_url = pg_url  # postgresql://user@host:port/maintenance-db
        self.redis_url = redis_url
        self.run_id = secrets.token_hex(4)
        self.database = f"conduit_scale_{self.run_id}"
        self.prefix = f"conduit-scale-{self.run_id}"  # rate-limit keys (and the outbox queue's name)
        self.tmp = Path(tempfile.mkdtemp(prefix="conduit-scale-"))
        self.pgbouncer_port = free_port()
        self.nginx_port = free_port()
        self.ports = [free_port() for _ in range(INSTANCES)]
        self.instances: list[subprocess.Popen[bytes] | None] = [None] * INSTANCES
        self.ready: set[int] = set()
        self.pgbouncer: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None
        self.secret_key = secrets.token_urlsafe(48)
        self.database_created = False
        host, _, _database = pg_url.removeprefix("postgresql://").partition("/")
        self.pg_user, _, self.pg_hostport = host.rpartition("@")
        self.pg_user = self.pg_user or "postgres"
        self.pg_host, _, port = self.pg_hostport.partition(":")
        self.pg_port = int(port or 5432)

    # -- URLs and environment -------------------------------------------------------------------------------------
    def direct_url(self) -> str:
        return f"postgresql+asyncpg://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.database}"

    def bouncer_url(self) -> str:
        return f"postgresql+asyncpg://{self.pg_user}@127.0.0.1:{self.pgbouncer_port}/{self.database}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
        env.update(
            SERVICE_ENVIRONMENT="development",  # "production" would mail through SMTP; there is no SMTP server here
            SERVICE_SECRET_KEY=self.secret_key,  # one key for all: a token from one instance is good on the others
            SERVICE_DATABASE_URL=self.bouncer_url(),
            SERVICE_DATABASE_PGBOUNCER="true",
            SERVICE_DATABASE_POOL_SIZE=str(APP_POOL),
            SERVICE_REDIS_URL=self.redis_url,
            SERVICE_RATE_LIMIT_KEY_PREFIX=self.prefix,
            SERVICE_OUTBOX_QUEUE=f"{self.prefix}-outbox",
            SERVICE_RATE_LIMITS_ENABLED="true",
            SERVICE_RATE_LIMIT_LOGIN_ACCOUNT_FAILURES=f"{ACCOUNT_FAILURES}/15 minutes",
            SERVICE_RATE_LIMIT_LOGIN_ADDRESS=f"{ADDRESS_LOGINS}/hour",
            SERVICE_TRUSTED_PROXIES="127.0.0.1",
            SERVICE_SHUTDOWN_DELAY=str(SHUTDOWN_DELAY_S),
            SERVICE_SHUTDOWN_TIMEOUT="10",
            SERVICE_LOG_FORMAT="json",
            SERVICE_LOG_LEVEL="WARNING",
            SERVICE_DOCS_ENABLED="false",
        )
        env.update(extra)
        return env

    def run_cli(self, *args: str, stdin: str = "", **env: str) -> str:
        done = subprocess.run(  # noqa: S603 - our own CLI
            [str(BIN / "service"), *args], input=stdin.encode(), env=self.env(**env), capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"service {' '.join(args)}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    # -- database and Redis ---------------------------------------------------------------------------------------
    async def admin_sql(self, sql: str) -> None:
        conn = await asyncpg.connect(host=self.pg_host, port=self.pg_port, user=self.pg_user, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self) -> None:
        await self.admin_sql(f'CREATE DATABASE "{self.database}"')
        self.database_created = True
        # Behind PgBouncer the app sends no startup parameters: the server-side timeouts live on the database.
        await self.admin_sql(f"ALTER DATABASE \"{self.database}\" SET statement_timeout = '10s'")
        await self.admin_sql(f"ALTER DATABASE \"{self.database}\" SET lock_timeout = '5s'")
        # Migrations go straight to PostgreSQL (as a migration job would), the instances through PgBouncer.
        self.run_cli("migrate", SERVICE_DATABASE_URL=self.direct_url(), SERVICE_DATABASE_PGBOUNCER="false")

    async def backend_pids(self) -> list[int]:
        conn = await asyncpg.connect(host=self.pg_host, port=self.pg_port, user=self.pg_user, database="postgres")
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", self.database
            )
            return [row["pid"] for row in rows]
        finally:
            await conn.close()

    def cpu_by_component(self, backends: list[int]) -> dict[str, float]:
        def pids(*processes: subprocess.Popen[bytes] | None) -> list[int]:
            return [p.pid for p in processes if p is not None and p.poll() is None]

        return {
            "instances": cpu_seconds(pids(*self.instances)),
            "nginx": cpu_seconds(pids(self.nginx)),
            "pgbouncer": cpu_seconds(pids(self.pgbouncer)),
            "postgresql": cpu_seconds(backends),
        }

    async def server_connections(self) -> int:
        conn = await asyncpg.connect(host=self.pg_host, port=self.pg_port, user=self.pg_user, database="postgres")
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", self.database
            )
            return count
        finally:
            await conn.close()

    def pgbouncer_totals(self) -> dict[str, int]:
        """PgBouncer's running totals for the database (SHOW STATS: transactions, queries, microseconds)."""
        psql, query = shutil.which("psql") or "psql", ["-A", "-F", "|", "-c", "SHOW STATS"]
        done = subprocess.run(  # noqa: S603 - the admin console speaks only the simple query protocol: psql
            [psql, "-h", "127.0.0.1", "-p", str(self.pgbouncer_port), "-U", self.pg_user, *query, "pgbouncer"],
            capture_output=True,
            check=True,
            timeout=10,
        )
        rows = [row.split("|") for row in done.stdout.decode().splitlines() if "|" in row]
        header, values = rows[0], next(row for row in rows[1:] if row[0] == self.database)
        return {name: int(value) for name, value in zip(header, values, strict=True) if name.startswith("total_")}

    async def redis_keys(self) -> list[bytes]:
        redis = Redis.from_url(self.redis_url)
        try:
            keys: list[bytes] = []
            for pattern in (f"{self.prefix}*", f"saq:{self.prefix}*"):
                keys += [key async for key in redis.scan_iter(match=pattern, count=1000)]
            return keys
        finally:
            await redis.aclose()

    async def delete_redis_keys(self) -> int:
        keys = await self.redis_keys()
        if keys:
            redis = Redis.from_url(self.redis_url)
            try:
                await redis.delete(*keys)
            finally:
                await redis.aclose()
        return len(keys)

    # -- processes ------------------------------------------------------------------------------------------------
    def _owned_by(self, path: Path, user: str) -> None:
        if os.geteuid() == 0:  # pgbouncer and nginx's workers run unprivileged: their files must be theirs
            owner = pwd.getpwnam(user)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start_pgbouncer(self) -> None:
        exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        workdir = self.tmp / "pgbouncer"
        workdir.mkdir()
        (workdir / "users.txt").write_text(f'"{self.pg_user}" ""\n')
        (workdir / "pgbouncer.ini").write_text(
            f"[databases]\n{self.database} = host={self.pg_host} port={self.pg_port} dbname={self.database}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.pgbouncer_port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\npool_mode = transaction\n"
            f"default_pool_size = {PGBOUNCER_POOL}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            f"max_client_conn = 500\nlog_connections = 0\nlog_disconnections = 0\nadmin_users = {self.pg_user}\n"
        )
        for path in (workdir, *workdir.iterdir()):
            self._owned_by(path, "postgres")
        command = [exe, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(workdir / "pgbouncer.ini")]
        with (workdir / "pgbouncer.log").open("wb") as out:
            self.pgbouncer = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603

    def start_instance(self, index: int) -> None:
        out = (self.tmp / f"instance-{index + 1}.log").open("ab")
        self.instances[index] = subprocess.Popen(  # noqa: S603 - our own CLI
            [str(BIN / "service"), "serve", "--port", str(self.ports[index]), "--workers", "1"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    def nginx_config(self) -> str:
        servers = "\n".join(
            f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s{'' if i in self.ready else ' down'};"
            for i, port in enumerate(self.ports)
        )
        tmp = self.tmp / "nginx"
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        return f"""{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream conduit {{
    least_conn;
{servers}
    keepalive 64;
    keepalive_timeout 4s;  # under uvicorn's 5 s: nginx never reuses a connection the instance is closing
  }}
  server {{
    listen 127.0.0.1:{self.nginx_port} backlog=4096;
    location / {{
      proxy_pass http://conduit;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      # Connection errors and timeouts go to the next instance; a POST only if it was never sent (no non_idempotent).
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 1s;
      proxy_read_timeout 30s;
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
"""

    def write_nginx_config(self) -> None:
        (self.tmp / "nginx" / "nginx.conf").write_text(self.nginx_config())

    def start_nginx(self) -> None:
        tmp = self.tmp / "nginx"
        tmp.mkdir()
        self._owned_by(tmp, "nobody")
        self.write_nginx_config()
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        with (tmp / "stderr.log").open("wb") as out:
            self.nginx = subprocess.Popen(  # noqa: S603
                [exe, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def reload_nginx(self) -> None:
        self.write_nginx_config()
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGHUP)  # new workers with the new upstreams; the old ones finish first

    async def controller(self, stop: asyncio.Event) -> None:
        """The endpoints controller: nginx routes to exactly the instances whose readiness is 200."""
        misses: dict[int, int] = {}
        async with httpx.AsyncClient(timeout=3.0) as client:  # readiness answers within 2 s
            while not stop.is_set():
                ready: set[int] = set()
                for i, port in enumerate(self.ports):
                    process = self.instances[i]
                    if process is None or process.poll() is not None:
                        misses[i] = 0
                        continue
                    try:
                        status = (await client.get(f"http://127.0.0.1:{port}/health/ready")).status_code
                    except httpx.HTTPError:
                        status = 0
                    # A 503 (draining, or a dependency down) counts at once; an unanswered check (a busy machine)
                    # only the third in a row, so that a slow answer does not take an instance out.
                    misses[i] = 0 if status == 200 else misses.get(i, 0) + (3 if status == 503 else 1)
                    if status == 200 or (i in self.ready and misses[i] < 3):
                        ready.add(i)
                if ready != self.ready:
                    log(f"endpoints: ready instances {sorted(i + 1 for i in ready)} (nginx reloaded)")
                    self.ready = ready
                    self.reload_nginx()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CONTROLLER_POLL_S)

    async def wait_until(self, condition: Any, what: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.tmp}")
            await asyncio.sleep(0.1)

    async def wait_routed(self, base: str) -> None:
        async with httpx.AsyncClient(timeout=3.0) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{base}/health/live")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"nginx routes to no instance; logs in {self.tmp}")

    async def wait_port(self, port: int, what: str) -> None:
        def open_() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        await self.wait_until(open_, what)

    def stop_process(self, process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def teardown(self) -> list[str]:
        notes: list[str] = []
        for process in self.instances:
            self.stop_process(process, signal.SIGINT)  # Ctrl-C: no shutdown delay
        self.stop_process(self.nginx, signal.SIGQUIT)
        self.stop_process(self.pgbouncer)
        if self.database_created:
            await self.admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            notes.append(f"database {self.database} dropped")
        deleted = await self.delete_redis_keys()
        left = len(await self.redis_keys())
        notes.append(f"redis keys deleted: {deleted}, left: {left}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return notes


# -- clients ------------------------------------------------------------------------------------------------------
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def register(client: httpx.AsyncClient, name: str, address: str) -> dict[str, Any]:
    user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = await client.post("/api/users", json={"user": user}, headers={"X-Forwarded-For": address})
    if response.status_code != 201:
        raise RuntimeError(f"register {name}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()["user"]
    return body


@dataclass
class World:
    users: list[dict[str, Any]]
    slugs: list[str]


async def seed(client: httpx.AsyncClient) -> World:
    users = [await register(client, f"seed{i}", f"10.8.0.{i + 1}") for i in range(SEED_USERS)]
    slugs: list[str] = []
    for i, user in enumerate(users):
        for j in range(SEED_ARTICLES):
            article = {"title": f"Seed {i} {j}", "description": "d", "body": "b", "tagList": [f"tag{j}", "scale"]}
            response = await client.post("/api/articles", json={"article": article}, headers=auth(user["token"]))
            response.raise_for_status()
            slugs.append(response.json()["article"]["slug"])
    return World(users, slugs)


def pick_request(world: World, rng: random.Random, n: int) -> tuple[str, str, dict[str, Any]]:
    """One request of the mix: about 85% reads, 15% writes (comments, favorites, articles)."""
    user = rng.choice(world.users)
    slug = rng.choice(world.slugs)
    headers = auth(user["token"])
    roll = rng.random()
    if roll < 0.20:
        return "GET", "/api/articles?limit=20", {}
    if roll < 0.35:
        return "GET", "/api/articles?limit=20", {"headers": headers}
    if roll < 0.50:
        return "GET", f"/api/articles/{slug}", {"headers": headers if roll < 0.42 else {}}
    if roll < 0.58:
        return "GET", f"/api/articles/{slug}/comments", {}
    if roll < 0.66:
        return "GET", "/api/tags", {}
    if roll < 0.75:
        return "GET", f"/api/profiles/{rng.choice(world.users)['username']}", {"headers": headers}
    if roll < 0.85:
        return "GET", "/api/user", {"headers": headers}
    if roll < 0.91:
        return "POST", f"/api/articles/{slug}/comments", {"headers": headers, "json": {"comment": {"body": f"c{n}"}}}
    if roll < 0.97:
        method = "POST" if roll < 0.94 else "DELETE"
        return method, f"/api/articles/{slug}/favorite", {"headers": headers}
    article = {"title": f"Load {n} {rng.random()}", "description": "d", "body": "b", "tagList": ["load"]}
    return "POST", "/api/articles", {"headers": headers, "json": {"article": article}}


async def load(base: str, world: World, concurrency: int, duration: float, *, during: Any = None) -> Stats:
    """A closed loop of ``concurrency`` clients for ``duration`` seconds; ``during`` runs alongside (a restart)."""
    stats = Stats()
    deadline = time.monotonic() + duration
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:

        async def worker(seed_value: int) -> None:
            rng = random.Random(seed_value)  # noqa: S311 - a load mix, not a secret
            while time.monotonic() < deadline:
                method, path, kwargs = pick_request(world, rng, next(counter))
                start = time.perf_counter()
                try:
                    try:
                        response = await client.request(method, path, **kwargs)
                    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                        # A keep-alive connection that nginx's old worker closed, the request unread, as it reloaded
                        # (an endpoints change): nothing answered, nothing forwarded. Browsers resend such a request
                        # on a fresh connection, whatever its method; so do we, once, and count it.
                        if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" not in str(exc):
                            raise
                        stats.resent += 1
                        response = await client.request(method, path, **kwargs)
                except httpx.HTTPError as exc:
                    stats.latencies.append(time.perf_counter() - start)
                    stats.failures.append(f"{method} {path}: {type(exc).__name__} {exc}")
                    continue
                stats.latencies.append(time.perf_counter() - start)
                stats.statuses[response.status_code] += 1
                stats.upstreams[response.headers.get("x-upstream", "?")] += 1
                if not 200 <= response.status_code < 300:
                    stats.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")

        cpu, wall = time.process_time(), time.monotonic()
        tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
        if during is not None:
            await during()
        await asyncio.gather(*tasks)
        stats.wall_s, stats.cpu_s = time.monotonic() - wall, time.process_time() - cpu
    return stats


async def sample_connections(stack: Stack, stop: asyncio.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(await stack.server_connections())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def loaded_phase(
    stack: Stack, base: str, world: World, args: argparse.Namespace, during: Any = None
) -> tuple[Stats, int]:
    stop = asyncio.Event()
    seen: list[int] = []
    before = stack.pgbouncer_totals()
    backends = await stack.backend_pids()
    cpu_before = stack.cpu_by_component(backends)
    sampler = asyncio.create_task(sample_connections(stack, stop, seen))
    stats = await load(base, world, args.concurrency, args.duration, during=during)
    stop.set()
    await sampler
    backends = sorted(set(backends) | set(await stack.backend_pids()))
    cpu_after = stack.cpu_by_component(backends)
    if during is None:  # a restart replaces an instance's process: its CPU would not add up
        stats.cpu = (
            ", ".join(
                f"{name} {(cpu_after[name] - cpu_before[name]) / max(1, stats.requests) * 1e6:.0f} us"
                for name in cpu_after
            )
            + f", load generator {stats.cpu_s / max(1, stats.requests) * 1e6:.0f} us"
        )
    after = stack.pgbouncer_totals()
    delta = {name: after[name] - before[name] for name in after}
    xacts, queries = max(1, delta["total_xact_count"]), delta["total_query_count"]
    stats.database = (
        f"PgBouncer: {queries / max(1, stats.requests):.2f} statements and {xacts / max(1, stats.requests):.2f} "
        f"server transactions a request, {delta['total_xact_time'] / xacts / 1000:.2f} ms each on the server, "
        f"pool busy {delta['total_xact_time'] / 1e6 / stats.wall_s / PGBOUNCER_POOL:.0%} of "
        f"{PGBOUNCER_POOL} connections, clients waited {delta['total_wait_time'] / 1e6:.1f} s in all"
    )
    return stats, max(seen, default=0)


# -- checks -------------------------------------------------------------------------------------------------------
async def check_revocation(stack: Stack, base: str) -> list[Check]:
    instance = [f"http://127.0.0.1:{port}" for port in stack.ports]
    checks: list[Check] = []
    async with httpx.AsyncClient(timeout=10.0) as client, httpx.AsyncClient(base_url=base, timeout=10.0) as nginx:
        user = await register(nginx, "revokee", "10.7.0.1")
        before = [(await client.get(f"{i}/api/user", headers=auth(user["token"]))).status_code for i in instance[1:]]
        out = await client.post(f"{instance[0]}/api/users/logout", headers=auth(user["token"]))
        after = [(await client.get(f"{i}/api/user", headers=auth(user["token"]))).status_code for i in instance[1:]]
        checks.append(
            Check(
                "(b) logout on 1 cuts 2 and 3",
                before == [200, 200] and out.status_code == 204 and after == [401, 401],
                f"before {before}, logout on 1: {out.status_code}, next request on 2 and 3: {after}",
            )
        )

        stack.run_cli(
            "users", "create", "--email", "scaleadmin@example.com", "--username", "scaleadmin", "--role", "admin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        login = await client.post(
            f"{instance[0]}/api/users/login",
            json={"user": {"email": "scaleadmin@example.com", "password": PASSWORD}},
            headers={"X-Forwarded-For": "10.7.0.2"},
        )
        admin_token = login.json()["user"]["token"]
        victim = await register(nginx, "suspendee", "10.7.0.3")
        before = [(await client.get(f"{i}/api/user", headers=auth(victim["token"]))).status_code for i in instance[1:]]
        suspended = await client.put(
            f"{instance[0]}/api/admin/users/suspendee",
            json={"user": {"status": "suspended"}},
            headers=auth(admin_token),
        )
        after = [(await client.get(f"{i}/api/user", headers=auth(victim["token"]))).status_code for i in instance[1:]]
        checks.append(
            Check(
                "(b) suspension on 1 cuts 2 and 3",
                before == [200, 200] and suspended.status_code == 200 and after == [401, 401],
                f"admin login {login.status_code}, before {before}, suspend on 1: {suspended.status_code}, "
                f"next request on 2 and 3: {after}",
            )
        )
    return checks


async def check_rate_limits(stack: Stack, base: str) -> list[Check]:
    instance = [f"http://127.0.0.1:{port}" for port in stack.ports]
    checks: list[Check] = []
    async with httpx.AsyncClient(timeout=10.0) as client, httpx.AsyncClient(base_url=base, timeout=10.0) as nginx:
        await register(nginx, "limited", "10.6.0.1")
        # Failures per account: each attempt from its own address, round robin over the instances.
        statuses = []
        for n in range(ACCOUNT_FAILURES + 2):
            response = await client.post(
                f"{instance[n % INSTANCES]}/api/users/login",
                json={"user": {"email": "limited@example.com", "password": "wrong-password"}},
                headers={"X-Forwarded-For": f"10.6.1.{n + 1}"},
            )
            statuses.append(response.status_code)
        first = statuses.index(429) + 1 if 429 in statuses else None
        checks.append(
            Check(
                f"(c) login failures per account shared ({ACCOUNT_FAILURES}/15 min)",
                statuses[:ACCOUNT_FAILURES] == [401] * ACCOUNT_FAILURES and first == ACCOUNT_FAILURES + 1,
                f"first 429 at attempt {first} of {len(statuses)} over {INSTANCES} instances "
                f"(per-instance counts would allow {INSTANCES * ACCOUNT_FAILURES})",
            )
        )
        # Logins per client address: one address, a different unknown account each time.
        statuses = []
        for n in range(ADDRESS_LOGINS + 2):
            response = await client.post(
                f"{instance[n % INSTANCES]}/api/users/login",
                json={"user": {"email": f"nobody{n}@example.com", "password": "wrong-password"}},
                headers={"X-Forwarded-For": "10.6.2.1"},
            )
            statuses.append(response.status_code)
        first = statuses.index(429) + 1 if 429 in statuses else None
        checks.append(
            Check(
                f"(c) logins per address shared ({ADDRESS_LOGINS}/hour)",
                statuses[:ADDRESS_LOGINS] == [401] * ADDRESS_LOGINS and first == ADDRESS_LOGINS + 1,
                f"first 429 at attempt {first} of {len(statuses)} over {INSTANCES} instances "
                f"(per-instance counts would allow {INSTANCES * ADDRESS_LOGINS})",
            )
        )
    return checks


async def check_forwarded_for(base: str, world: World) -> Check:
    """nginx appends the peer to X-Forwarded-For and the app, trusting 127.0.0.1, records the client's address."""
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
        sessions = (await client.get("/api/user/sessions", headers=auth(world.users[0]["token"]))).json()
    ips = [s.get("ip") for s in sessions.get("sessions", [])]
    return Check("X-Forwarded-For through nginx", ips == ["10.8.0.1"], f"session address recorded: {ips}")


def line(stats: Stats, label: str) -> str:
    return (
        f"{label}: {stats.requests} requests, {stats.failed} failed ({stats.resent} resent on a new connection), "
        f"{stats.rps:.0f} req/s, "
        f"p50 {stats.percentile(0.5):.1f} ms, p99 {stats.percentile(0.99):.1f} ms, "
        f"load generator CPU {stats.cpu_s / stats.wall_s if stats.wall_s else 0:.2f} core"
    )


async def scenario(stack: Stack, args: argparse.Namespace) -> tuple[list[Check], list[str]]:
    base = f"http://127.0.0.1:{stack.nginx_port}"
    checks: list[Check] = []
    report: list[str] = []
    total = Stats()

    log(f"database {stack.database}: create, set timeouts, migrate (service migrate, direct)")
    await stack.create_database()
    stack.start_pgbouncer()
    await stack.wait_port(stack.pgbouncer_port, "pgbouncer")
    stack.start_nginx()
    await stack.wait_port(stack.nginx_port, "nginx")
    stop_controller = asyncio.Event()
    controller = asyncio.create_task(stack.controller(stop_controller))
    try:
        stack.start_instance(0)
        await stack.wait_until(lambda: stack.ready == {0}, "instance 1 ready in nginx")
        await stack.wait_routed(base)  # the reload is asynchronous: until it is done, nginx has no upstream
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
            world = await seed(client)
        log(f"seeded {len(world.users)} users, {len(world.slugs)} articles through nginx")

        log(f"phase 1: 1 instance, {args.concurrency} clients, {args.duration:.0f} s")
        one, conns_one = await loaded_phase(stack, base, world, args)
        total.merge(one)
        report += [line(one, "1 instance  "), f"  {one.database}", f"  CPU a request: {one.cpu}"]

        for i in range(1, INSTANCES):
            stack.start_instance(i)
        await stack.wait_until(lambda: stack.ready == set(range(INSTANCES)), "all instances ready in nginx")
        log(f"phase 2: {INSTANCES} instances, {args.concurrency} clients, {args.duration:.0f} s")
        three, conns_three = await loaded_phase(stack, base, world, args)
        total.merge(three)
        report += [line(three, f"{INSTANCES} instances"), f"  {three.database}", f"  CPU a request: {three.cpu}"]
        spread = dict(sorted(three.upstreams.items()))
        report.append(f"phase 2 requests per upstream: {spread}")
        report.append(
            f"per instance: {one.rps:.0f} req/s alone, {three.rps / INSTANCES:.0f} req/s each of {INSTANCES} "
            f"(2 shared cores: instances, nginx, PgBouncer, PostgreSQL, Redis and the load generator)"
        )
        bound = PGBOUNCER_POOL
        checks.append(
            Check(
                "(e) PostgreSQL connections flat 1 -> 3 instances",
                0 < conns_one <= bound and 0 < conns_three <= bound,
                f"max server connections: {conns_one} with 1 instance, {conns_three} with {INSTANCES} "
                f"(PgBouncer pool {bound}; client connections allowed: {APP_POOL} -> {INSTANCES * APP_POOL})",
            )
        )

        checks.append(await check_forwarded_for(base, world))
        checks += await check_revocation(stack, base)
        checks += await check_rate_limits(stack, base)

        restart_notes: list[str] = []

        async def restart() -> None:
            await asyncio.sleep(args.duration / 4)
            target = stack.instances[1]
            if target is None:
                raise RuntimeError("instance 2 is not running")
            started = time.monotonic()
            target.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(target.wait, 30)
            drained = time.monotonic() - started
            stack.start_instance(1)
            await stack.wait_until(lambda: 1 in stack.ready, "instance 2 back in nginx")
            restart_notes.append(
                f"instance 2: SIGTERM -> exit {code} after {drained:.1f} s (delay {SHUTDOWN_DELAY_S:.0f} s), "
                f"back in nginx {time.monotonic() - started:.1f} s after the signal"
            )

        log(f"phase 3: {INSTANCES} instances, instance 2 restarted under load, {args.duration:.0f} s")
        restarted, _ = await loaded_phase(stack, base, world, args, during=restart)
        total.merge(restarted)
        report.append(line(restarted, "restart     "))
        report += restart_notes
        checks.append(
            Check(
                "(d) restart under load costs no request",
                restarted.failed == 0 and bool(restart_notes) and "exit 0" in restart_notes[0],
                f"{restarted.requests} requests, {restarted.failed} failed; {'; '.join(restart_notes)}",
            )
        )
    finally:
        stop_controller.set()
        await controller

    checks.insert(
        0,
        Check(
            "(a) no failed request",
            total.failed == 0 and total.requests > 0,
            f"{total.requests} requests, {total.failed} failed, statuses {dict(sorted(total.statuses.items()))}"
            + (f"; first failures: {total.failures[:5]}" if total.failures else ""),
        ),
    )
    report.insert(0, line(total, "whole run   "))
    return checks, report


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients of the load generator")
    parser.add_argument(
        "--postgres", default=os.environ.get("SCALE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis", default=os.environ.get("SCALE_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    for tool in ("pgbouncer", "nginx"):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            print(f"{tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    started = time.monotonic()
    stack = Stack(args.postgres, args.redis)
    checks: list[Check] = []
    report: list[str] = []
    error: BaseException | None = None
    try:
        checks, report = await scenario(stack, args)
    except Exception as exc:  # reported below, after the cleanup
        error = exc
    finally:
        notes = await stack.teardown()
    print("\n== scale-test summary ==")
    for text in report:
        print(text)
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    print(f"cleanup: {'; '.join(notes)}")
    print(f"total run time {time.monotonic() - started:.0f} s")
    if error is not None:
        print(f"FAIL  the run stopped: {type(error).__name__}: {error}")
        return 1
    return 0 if checks and all(check.passed for check in checks) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup (the finally blocks) on SIGTERM as on Ctrl-C
    sys.exit(asyncio.run(main()))
