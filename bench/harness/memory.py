"""The worker processes seen through /proc: memory (RSS) sampled around every case, CPU time, and the soak.

The soak (``--soak MINUTES``) runs a mixed read load against the service alone and samples its workers every
10 s, to show whether memory keeps growing under steady load: growth is measured from the end of the first minute
(caches, pools and the allocator have settled by then) to the end.
"""

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import wrk
from bench.harness.options import LUA
from bench.harness.processes import Server

SOAK_SAMPLE_S = 10.0
SETTLE_S = 60.0  # the soak's growth counts from here


@dataclass(frozen=True)
class Memory:
    rss_kib: int  # resident now (VmRSS)
    hwm_kib: int  # the most it has ever been resident (VmHWM)

    def as_json(self) -> dict[str, int]:
        return {"rss_kib": self.rss_kib, "hwm_kib": self.hwm_kib}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(master: int) -> list[int]:
    """The uvicorn workers: the master's children (uvicorn spawns them with multiprocessing)."""
    pids: list[int] = []
    for task in Path(f"/proc/{master}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    return sorted(pid for pid in pids if "resource_tracker" not in _cmdline(pid))


def read_memory(pid: int) -> Memory | None:
    """VmRSS and VmHWM from /proc/<pid>/status, or None when the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return Memory(int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of the processes, from /proc/<pid>/stat (gone ones count nothing)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def sample_workers(server: Server) -> dict[str, dict[str, int]]:
    """pid (as a JSON key) -> memory of each worker of one server, now."""
    samples = {pid: read_memory(pid) for pid in worker_pids(server.process.pid)}
    return {str(pid): memory.as_json() for pid, memory in samples.items() if memory is not None}


class MemoryLog:
    """The workers' memory on each side, sampled before the first case and after each one."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.samples: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}

    def sample(self, after: str) -> None:
        for server in self.servers:
            self.samples[server.name].append({"after": after, "workers": sample_workers(server)})

    def as_json(self) -> dict[str, Any]:
        return {name: {"samples": samples, "workers": summarize(samples)} for name, samples in self.samples.items()}


def summarize(samples: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """pid -> start, end and peak RSS (KiB) over the samples, and the kernel's high-water mark (VmHWM).

    The high-water mark also catches what happened between samples (an Argon2 hash holds 64 MiB for a few
    tens of ms), but it covers the process's whole life, so the soak looks at the sampled peak instead."""
    series: dict[str, list[dict[str, int]]] = {}
    for sample in samples:
        for pid, memory in sample["workers"].items():
            series.setdefault(pid, []).append(memory)
    return {
        pid: {
            "start_kib": values[0]["rss_kib"],
            "end_kib": values[-1]["rss_kib"],
            "peak_kib": max(v["rss_kib"] for v in values),
            "hwm_kib": max(v["hwm_kib"] for v in values),
        }
        for pid, values in series.items()
    }


def _growth(samples: list[dict[str, Any]], pid: str) -> int:
    """RSS growth (KiB) of one worker from the first sample after SETTLE_S (or the first one) to the last."""
    values: list[tuple[float, int]] = [
        (sample["t"], sample["workers"][pid]["rss_kib"]) for sample in samples if pid in sample["workers"]
    ]
    if not values:
        return 0
    settled = next((rss for t, rss in values if t >= SETTLE_S), values[0][1])
    return values[-1][1] - settled


def soak(server: Server, data_file: Path, *, minutes: float, threads: int, connections: int) -> dict[str, Any]:
    """Mixed read load against one server for ``minutes``, sampling its workers every SOAK_SAMPLE_S."""
    seconds = minutes * 60
    script = LUA / "requests.lua"
    argv = wrk.command(server.url, script, [str(data_file)], threads=threads, connections=connections, seconds=seconds)
    samples: list[dict[str, Any]] = []
    print(
        f"soak: {minutes:g} min of mixed reads against the {server.name}, memory every {SOAK_SAMPLE_S:g} s", flush=True
    )
    with wrk.started(argv) as process:
        start = time.monotonic()
        while process.poll() is None:
            elapsed = time.monotonic() - start
            samples.append({"t": round(elapsed, 1), "workers": sample_workers(server)})
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(SOAK_SAMPLE_S - elapsed % SOAK_SAMPLE_S)
        result = wrk.finish(process, timeout=60)
    samples.append({"t": round(time.monotonic() - start, 1), "workers": sample_workers(server)})
    workers = summarize(samples)
    for pid, summary in workers.items():
        summary["growth_after_first_minute_kib"] = _growth(samples, pid)
    return {"side": server.name, "minutes": minutes, "result": result.as_json(), "workers": workers, "samples": samples}
