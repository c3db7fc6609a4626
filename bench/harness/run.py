"""One benchmark run, start to end: database, servers, test data, every case on both sides, memory, report."""

import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import memory, report, wrk
from bench.harness.cases import WRITES, Case, build_cases, soak_lines, write_data_file
from bench.harness.client import login
from bench.harness.database import (
    WRITER_PREFIX,
    Database,
    Monitor,
    TestData,
    load_test_data,
    prepare,
    remove_written_rows,
)
from bench.harness.database import row_counts as count_rows
from bench.harness.options import PASSWORD, REPO, RESULTS, SEED, Options
from bench.harness.processes import STAND_IN, Server, ServerSpec, ceiling_spec, running, service_env, service_spec

WRITE_CLIENTS = 8  # simulated users of the write mix per side: Argon2 saturates two workers well before that
IDLE_CPU = 0.05  # a side is idle below this share of one core
SETTLE_TIMEOUT_S = 60.0


def _git() -> dict[str, Any]:
    git = shutil.which("git")
    if git is None:
        return {"commit": "unknown", "dirty": False}

    def out(*args: str) -> str:
        done = subprocess.run([git, *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
        return done.stdout.strip()

    # --no-optional-locks: status must not refresh the index (this harness never writes to the repository)
    return {
        "commit": out("rev-parse", "HEAD") or "unknown",
        "dirty": bool(out("--no-optional-locks", "status", "--porcelain")),
    }


def _results_dir(scale: str, now: datetime) -> Path:
    directory = RESULTS / f"{now:%Y%m%dT%H%M%SZ}-{scale}"
    directory.mkdir(parents=True)
    return directory


def _without_password(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _settings(options: Options, db: Database) -> dict[str, Any]:
    return {
        "users": options.users,
        "articles": options.articles,
        "seed": SEED,
        "database": db.name,
        "admin_url": _without_password(options.admin_url),
        "duration": options.duration,
        "warmup": options.warmup,
        "rounds": options.rounds,
        "connections": options.connections,
        "threads": options.threads,
        "workers": options.workers,
        "write_clients": WRITE_CLIENTS,
        "wrk_timeout_s": wrk.TIMEOUT_S,
        "only": options.only,
        "writes": options.writes,
        "soak_minutes": options.soak_minutes,
    }


def _estimate_s(options: Options, cases: int) -> float:
    runs = cases * options.rounds * 2  # both sides
    per_run = options.warmup + options.duration + 2  # about a second to settle after the warm-up and the measurement
    return runs * per_run + options.soak_minutes * 60


class Bench:
    """The measurement loop: every case, every round, both sides in alternating order."""

    def __init__(
        self, options: Options, monitor: Monitor, servers: list[Server], data_dir: Path, top_tags: list[str]
    ) -> None:
        self.options = options
        self.monitor = monitor
        self.servers = servers
        self.data_dir = data_dir
        self.top_tags = top_tags
        self.run_id = secrets.token_hex(3)  # makes the write mix's usernames unique per run

    def _load(self, case: Case) -> tuple[int, int]:
        """wrk threads and connections; the write mix needs one connection per thread (see writes.lua)."""
        if case.group == WRITES:
            clients = min(WRITE_CLIENTS, self.options.connections)
            return clients, clients
        return self.options.threads, self.options.connections

    def _wrk(self, case: Case, server: Server, seconds: float, script_args: list[str]) -> wrk.WrkResult:
        threads, connections = self._load(case)
        result = wrk.run(
            server.url, case.script, script_args, threads=threads, connections=connections, seconds=seconds
        )
        self._settle()
        return result

    def _settle(self) -> None:
        """Wait until neither side works any more. When wrk stops, the servers still finish the requests in flight,
        and that work would otherwise be charged to whatever is measured next."""
        pids = [pid for server in self.servers for pid in memory.worker_pids(server.process.pid)]
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        before = memory.cpu_seconds(pids)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            after = memory.cpu_seconds(pids)
            if (after - before) / 0.5 < IDLE_CPU and self.monitor.active_queries() == 0:
                return
            before = after
        print(f"  (the servers were still busy {SETTLE_TIMEOUT_S:.0f} s after wrk stopped)", flush=True)

    def _script_args(self, data_file: Path | None, server: Server, round_no: int, phase: str) -> list[str]:
        """What follows `--` on wrk's command line: the data file of a read case; the write mix's username prefix
        (unique per run, side, round and phase) and the tags its articles get."""
        if data_file is not None:
            return [str(data_file)]
        prefix = f"{WRITER_PREFIX}{self.run_id}_{server.name[0]}{round_no}{phase[0]}"  # e.g. bench_3fa2c1_s1m
        return [prefix, ",".join(self.top_tags[:10])]

    def measure(self, case: Case) -> dict[str, Any]:
        data_file = None if case.group == WRITES else write_data_file(self.data_dir, case.name, case.lines)
        rounds: dict[str, list[wrk.WrkResult]] = {server.name: [] for server in self.servers}
        for round_no in range(1, self.options.rounds + 1):
            order = self.servers if round_no % 2 else self.servers[::-1]  # round 2 starts with the ceiling
            for server in order:
                if self.options.warmup > 0:
                    warmup_args = self._script_args(data_file, server, round_no, "warmup")
                    self._wrk(case, server, self.options.warmup, warmup_args)
                args = self._script_args(data_file, server, round_no, "measure")
                result = self._wrk(case, server, self.options.duration, args)
                rounds[server.name].append(result)
                print(
                    f"  {case.name:<22} round {round_no}/{self.options.rounds} {server.name:<8}"
                    f"{result.requests_per_second:>9,.0f} req/s  p50 {result.latency_ms['p50']:7.1f} ms"
                    f"  p99 {result.latency_ms['p99']:7.1f} ms  errors {result.errors:,}",
                    flush=True,
                )
        return report.case_entry(case, rounds)


def _check_connections(monitor: Monitor, sides: list[ServerSpec]) -> None:
    free, wanted = monitor.free_connections(), sum(side.db_connections for side in sides)
    if wanted > free:
        print(
            f"warning: PostgreSQL accepts {free} more connections and the two sides may open up to {wanted}: "
            "expect 'too many clients' errors (another program holds connections)",
            flush=True,
        )


def _log_in(service: Server, data: TestData) -> list[str]:
    print(f"logging in {len(data.login_emails)} seeded users through the service", flush=True)
    return [login(service.port, email, PASSWORD) for email in data.login_emails]


def run(options: Options) -> Path:
    """Run the whole benchmark; returns the directory holding the results."""
    other = None if options.compare is None else (options.compare, _load_json(options.compare))  # fail early
    started = datetime.now(UTC)
    directory = _results_dir(options.scale, started)
    db = Database(options.admin_url, options.database)
    secret = secrets.token_urlsafe(36)  # 48 characters; tokens from the service's login are valid on both sides
    print(f"results: {directory.relative_to(REPO)}", flush=True)
    prepare(db, options, service_env(db, secret), directory / "prepare.log")
    results: dict[str, Any] = {
        "scale": options.scale,
        "started_at": f"{started:%Y-%m-%d %H:%M} UTC",
        "git": _git(),
        "settings": _settings(options, db),
        "row_counts": count_rows(db),
    }
    try:
        results |= _measure(options, db, secret, directory)
    finally:
        removed = remove_written_rows(db)  # the database stays at its seeded scale for the next run
        if removed:
            print(f"removed the {removed} accounts the write mix registered (with their articles)", flush=True)
    results["finished_at"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    results["compare"] = None if other is None else report.compare(results, *other)
    files = report.write(results, directory)
    print("\n" + files["md"].read_text())
    print(f"wrote {', '.join(str(path.relative_to(REPO)) for path in files.values())} (and latest-{options.scale}.*)")
    return directory


def _measure(options: Options, db: Database, secret: str, directory: Path) -> dict[str, Any]:
    """Start both sides, run every case (and the soak) against them, stop them: the measured part of results."""
    data = load_test_data(db)
    service_side = service_spec(db, secret, options.workers)
    ceiling_side = ceiling_spec(db, secret, options.workers, options.ceiling)
    if ceiling_side.description == STAND_IN:
        print("ceiling: bench/ceiling.py is not used; a second service instance stands in for it", flush=True)
    with ExitStack() as stack:
        monitor = stack.enter_context(Monitor(db))
        _check_connections(monitor, [service_side, ceiling_side])
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-bench-")))
        service = stack.enter_context(running(service_side, directory / "service.log"))
        ceiling = stack.enter_context(running(ceiling_side, directory / "ceiling.log"))
        tokens = _log_in(service, data)
        cases = [case for case in build_cases(data, tokens, writes=options.writes) if options.selects(case.name)]
        print(f"{len(cases)} cases on both sides, about {_estimate_s(options, len(cases)) / 60:.0f} min", flush=True)
        bench = Bench(options, monitor, [service, ceiling], data_dir, data.top_tags)
        memory_log = memory.MemoryLog([service, ceiling])
        memory_log.sample("start")
        measured = []
        for n, case in enumerate(cases, start=1):
            print(f"[{n}/{len(cases)}] {case.name}: {case.what}", flush=True)
            measured.append(bench.measure(case))
            memory_log.sample(case.name)
        soak = None
        if options.soak_minutes > 0:
            lines = soak_lines(build_cases(data, tokens, writes=False))  # every read case, whatever --only says
            soak = memory.soak(
                service,
                write_data_file(data_dir, "soak", lines),
                minutes=options.soak_minutes,
                threads=options.threads,
                connections=options.connections,
            )
    return {
        "sides": {"service": service_side.description, "ceiling": ceiling_side.description},
        "test_data": _describe(data, tokens),
        "cases": measured,
        "memory": memory_log.as_json(),
        "soak": soak,
    }


def _describe(data: TestData, tokens: list[str]) -> dict[str, Any]:
    return {
        "slugs": len(data.slugs),
        "authors": len(data.authors),
        "favoriters": len(data.favoriters),
        "top_tags": data.top_tags,
        "tokens": len(tokens),
        "article_count": data.article_count,
    }


def _load_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
