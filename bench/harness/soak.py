"""``make soak``: minutes of mixed load against the service alone; per minute, requests, errors, latency and RSS.

The load is ``bench/lua/mixed.lua``: every read case of the bench (anonymous and signed in, the feed, the deep page)
and a small share of writes (create an article, comment on it, favorite it) by a few accounts registered for the
soak, which are deleted with everything they wrote at the end. It runs as back-to-back wrk segments of one minute:
wrk reports only once per run, so each segment's own output gives that minute's requests, errors and percentiles,
and the workers' RSS is read from /proc between two segments (the only pause in the load: one wrk exiting, the
next starting and connecting).

The verdict compares the end of the first minute (caches, pools and the allocator have settled by then) with the
end: RSS growth per worker, and the last minute's p99 against the first's, each flat within a stated tolerance.
"""

import json
import os
import secrets
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import memory, wrk
from bench.harness.cases import DEEP, READ, build_cases, soak_lines, write_data_file
from bench.harness.client import login, register
from bench.harness.database import WRITER_PREFIX, Database, Monitor, load_test_data, prepare, remove_written_rows
from bench.harness.options import LUA, PASSWORD, REPO, RESULTS, Options
from bench.harness.processes import Server, running, service_env, service_spec

SEGMENT_S = 60  # one wrk run per minute of the table
WRITERS = 4  # accounts the writes rotate through
SCRIPT = LUA / "mixed.lua"


@dataclass(frozen=True)
class SoakOptions:
    bench: Options  # the seeding (scale, admin URL, reseed) and the load (workers, connections, threads)
    minutes: int
    write_percent: float  # share of the requests that are writes
    rss_tolerance: float  # percent: RSS is flat when no worker grew more than this after the first minute
    p99_tolerance: float  # percent: p99 is flat when the last minute's is at most this much above the first's
    database: str  # the bench's of the scale by default; another one keeps a soak clear of a bench run

    @property
    def write_every(self) -> int:
        """Every n-th request of a wrk thread is a write."""
        return max(1, round(100 / self.write_percent))


@dataclass(frozen=True)
class Minute:
    number: int
    result: wrk.WrkResult
    cpu_s: float  # the workers' CPU time (user and system) during the minute
    load: float  # the machine's 1-minute load average at the end: on a shared machine, what else competed
    rss_kib: dict[int, int | None]  # worker pid -> RSS at the end of the minute (None: the worker is gone)

    @property
    def cpu_ms_per_request(self) -> float:
        """Flat while the service does the same work per request, however busy the machine is."""
        return self.cpu_s * 1000 / max(1, self.result.requests)

    def as_json(self) -> dict[str, Any]:
        rss = {str(pid): kib for pid, kib in self.rss_kib.items()}
        return {
            "minute": self.number,
            "result": self.result.as_json(),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_ms_per_request": round(self.cpu_ms_per_request, 3),
            "load_1m": self.load,
            "rss_kib": rss,
        }


def _rss(pids: list[int]) -> dict[int, int | None]:
    samples = {pid: memory.read_memory(pid) for pid in pids}
    return {pid: None if sample is None else sample.rss_kib for pid, sample in samples.items()}


def _mib(kib: int | None) -> str:
    return "gone" if kib is None else f"{kib / 1024:.1f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


COLUMNS = ["minute", "requests", "req/s", "writes", "errors", "p50 ms", "p99 ms", "CPU ms/req", "load"]


def _minute_row(minute: Minute) -> str:
    result = minute.result
    return _row(
        [
            str(minute.number),
            f"{result.requests:,}",
            f"{result.requests_per_second:,.0f}",
            f"{sum(result.sent.values()):,}",
            f"{result.errors:,}",
            f"{result.latency_ms['p50']:.1f}",
            f"{result.latency_ms['p99']:.1f}",
            f"{minute.cpu_ms_per_request:.2f}",
            f"{minute.load:.1f}",
            *(_mib(kib) for kib in minute.rss_kib.values()),
        ]
    )


class Table:
    """The per-minute table, printed as it grows (Markdown) and kept for soak.md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)


def _verdict(options: SoakOptions, pids: list[int], minutes: list[Minute]) -> dict[str, Any]:
    """RSS growth per worker from the end of minute 1 to the end, and the last minute's p99 against the first's."""
    first, last = minutes[0], minutes[-1]
    workers: list[dict[str, Any]] = []
    for n, pid in enumerate(pids, start=1):
        settled, end = first.rss_kib[pid], last.rss_kib[pid]
        if settled is None or end is None:
            workers.append({"worker": n, "pid": pid, "gone": True, "flat": False})
            continue
        percent = (end - settled) / settled * 100
        flat = percent <= options.rss_tolerance
        workers.append({"worker": n, "pid": pid, "growth_kib": end - settled, "growth_percent": percent, "flat": flat})
    p99_first, p99_last = first.result.latency_ms["p99"], last.result.latency_ms["p99"]
    p99_ratio = p99_last / p99_first if p99_first > 0 else 1.0
    return {
        "requests": sum(m.result.requests for m in minutes),
        "errors": sum(m.result.errors for m in minutes),
        "rss": {
            "tolerance_percent": options.rss_tolerance,
            "flat": all(w["flat"] for w in workers),
            "workers": workers,
        },
        "p99": {
            "first_ms": p99_first,
            "last_ms": p99_last,
            "ratio": p99_ratio,
            "tolerance_percent": options.p99_tolerance,
            "flat": p99_ratio <= 1 + options.p99_tolerance / 100,
        },
        # what the p99 is to be read against on a shared machine
        "cpu_ms_per_request": {"first": first.cpu_ms_per_request, "last": last.cpu_ms_per_request},
        "load_1m": {"first": first.load, "last": last.load},
    }


def _verdict_lines(verdict: dict[str, Any], minutes: int) -> list[str]:
    def flat(ok: bool) -> str:
        return "flat" if ok else "NOT flat"

    growths = ", ".join(
        f"worker {w['worker']} gone"
        if w.get("gone")
        else f"worker {w['worker']} {w['growth_kib'] / 1024:+.1f} MiB ({w['growth_percent']:+.1f} %)"
        for w in verdict["rss"]["workers"]
    )
    rss, p99, errors = verdict["rss"], verdict["p99"], verdict["errors"]
    cpu, load = verdict["cpu_ms_per_request"], verdict["load_1m"]
    return [
        f"errors: {errors:,} of {verdict['requests']:,} requests" + ("" if errors == 0 else " (exit status 1)"),
        f"RSS, end of minute 1 to end of minute {minutes}: {growths}: {flat(rss['flat'])} "
        f"(tolerance +{rss['tolerance_percent']:g} % per worker)",
        f"p99, minute {minutes} against minute 1: {p99['last_ms']:.1f} ms against {p99['first_ms']:.1f} ms "
        f"(x{p99['ratio']:.2f}): {flat(p99['flat'])} (tolerance +{p99['tolerance_percent']:g} %)",
        f"context: worker CPU per request {cpu['last']:.2f} ms against {cpu['first']:.2f} ms, load average "
        f"{load['last']:.1f} against {load['first']:.1f} (on a shared machine, read the p99 against these)",
    ]


def _check_connections(monitor: Monitor, wanted: int) -> None:
    free = monitor.free_connections()
    if wanted > free:
        print(f"warning: PostgreSQL accepts {free} more connections and the service may open {wanted}", flush=True)


def _prepare_load(server: Server, db: Database, data_dir: Path, options: SoakOptions) -> list[str]:
    """The data files and script arguments of mixed.lua: reads with tokens of seeded users, and the writers."""
    data = load_test_data(db)
    print(f"logging in {len(data.login_emails)} seeded users, registering {WRITERS} writers", flush=True)
    tokens = [login(server.port, email, PASSWORD) for email in data.login_emails]
    run_id = secrets.token_hex(3)  # makes the writers' usernames unique per run; the prefix gets them deleted
    writers = [register(server.port, f"{WRITER_PREFIX}{run_id}_w{n}", PASSWORD) for n in range(1, WRITERS + 1)]
    reads = soak_lines(build_cases(data, tokens, writes=False), groups=(READ, DEEP))
    return [
        str(write_data_file(data_dir, "soak-reads", reads)),
        str(write_data_file(data_dir, "soak-writers", writers)),
        str(options.write_every),
        ",".join(data.top_tags[:10]),
        f"Soak {run_id}",
    ]


def _soak(
    options: SoakOptions, db: Database, secret: str, directory: Path, table: Table
) -> tuple[list[int], list[Minute]]:
    """Start the service, run the minutes, stop it: the workers' pids and what each minute measured."""
    bench = options.bench
    spec = service_spec(db, secret, bench.workers)
    with ExitStack() as stack:
        _check_connections(stack.enter_context(Monitor(db)), spec.db_connections)
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-soak-")))
        service = stack.enter_context(running(spec, directory / "service.log"))
        script_args = _prepare_load(service, db, data_dir, options)
        pids = memory.worker_pids(service.process.pid)
        print(
            f"soak: {options.minutes} min against the service ({bench.workers} workers, pids "
            f"{', '.join(map(str, pids))}), wrk -t{bench.threads} -c{bench.connections} in {SEGMENT_S} s segments, "
            f"1 request in {options.write_every} a write (create article, comment, favorite)\n",
            flush=True,
        )
        header = [*COLUMNS, *(f"RSS MiB w{n}" for n in range(1, len(pids) + 1))]
        table.add(_row(header), "|" + "|".join("---:" for _ in header) + "|")
        table.add(_row(["start", *([""] * (len(COLUMNS) - 1)), *(_mib(kib) for kib in _rss(pids).values())]))
        minutes: list[Minute] = []
        cpu = memory.cpu_seconds(pids)
        for number in range(1, options.minutes + 1):
            threads, connections = bench.threads, bench.connections
            result = wrk.run(
                service.url, SCRIPT, script_args, threads=threads, connections=connections, seconds=SEGMENT_S
            )
            rss, used = _rss(pids), memory.cpu_seconds(pids) - cpu  # at the end of the minute, before the next one
            cpu += used
            minutes.append(Minute(number, result, used, os.getloadavg()[0], rss))
            table.add(_minute_row(minutes[-1]))
    return pids, minutes


def run(options: SoakOptions) -> int:
    """Prepare the bench database, soak the service, print the table and the verdict; returns the errors."""
    bench = options.bench
    started = datetime.now(UTC)
    directory = RESULTS / f"{started:%Y%m%dT%H%M%SZ}-soak-{bench.scale}"
    directory.mkdir(parents=True)
    db = Database(bench.admin_url, options.database)
    secret = secrets.token_urlsafe(36)
    print(f"results: {directory.relative_to(REPO)}", flush=True)
    prepare(db, bench, service_env(db, secret), directory / "prepare.log")
    table = Table()
    try:
        pids, minutes = _soak(options, db, secret, directory, table)
    finally:
        removed = remove_written_rows(db)  # the database stays at its seeded scale for the bench
        if removed:
            print(f"removed the {removed} accounts the soak registered, with what they wrote", flush=True)
    verdict = _verdict(options, pids, minutes)
    lines = _verdict_lines(verdict, options.minutes)
    print("\n" + "\n".join(lines), flush=True)
    settings = {
        "scale": bench.scale,
        "database": db.name,
        "minutes": options.minutes,
        "segment_s": SEGMENT_S,
        "workers": bench.workers,
        "connections": bench.connections,
        "threads": bench.threads,
        "write_every": options.write_every,
        "writers": WRITERS,
        "wrk_timeout_s": wrk.TIMEOUT_S,
    }
    results = {
        "started_at": f"{started:%Y-%m-%d %H:%M} UTC",
        "settings": settings,
        "minutes": [m.as_json() for m in minutes],
        "verdict": verdict,
    }
    (directory / "soak.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "soak.md").write_text("\n".join([*table.lines, "", *lines]) + "\n")
    print(f"wrote {(directory / 'soak.json').relative_to(REPO)}, soak.md", flush=True)
    errors: int = verdict["errors"]
    return errors
