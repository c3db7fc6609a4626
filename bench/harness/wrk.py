"""Running wrk and reading what it prints.

From wrk's own output: Requests/sec, the ``--latency`` distribution (p50, p90, p99) and the socket errors. From
the lines our Lua scripts print when done (see ``bench/lua/common.lua``): every response's status, so a response
that is not 2xx counts as an error (wrk's own "Non-2xx or 3xx" line only counts 4xx and 5xx), and, for the write
mix, the successes and failures per kind of request, and for the soak's mixed load, the writes sent per kind.
"""

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# wrk's default is 2 s: slower responses would count as timeouts and drop out of the latency distribution
TIMEOUT_S = 10
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_STATUS = re.compile(r"^bench-status (\d+) (\d+)$", re.MULTILINE)
_STEP = re.compile(r"^bench-step (\S+) (\d+) (\d+)$", re.MULTILINE)
_SENT = re.compile(r"^bench-sent (\S+) (\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    requests: int
    latency_ms: dict[str, float]  # "p50", "p75", "p90", "p99"
    socket_errors: dict[str, int]  # "connect", "read", "write", "timeout"
    statuses: dict[int, int]  # status code -> responses
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # write mix: step -> {"ok": n, "errors": n}
    sent: dict[str, int] = field(default_factory=dict)  # mixed load (soak): kind of write -> requests sent

    @property
    def bad_statuses(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status <= 299)

    @property
    def errors(self) -> int:
        """Responses that were not 2xx, plus socket errors (connect, read, write, timeout)."""
        return self.bad_statuses + sum(self.socket_errors.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_per_second": self.requests_per_second,
            "requests": self.requests,
            "latency_ms": self.latency_ms,
            "socket_errors": self.socket_errors,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "errors": self.errors,
            **({"steps": self.steps} if self.steps else {}),
            **({"sent": self.sent} if self.sent else {}),
        }


def parse(output: str) -> WrkResult:
    rate = _RATE.search(output)
    total = _TOTAL.search(output)
    if rate is None or total is None:
        raise ValueError(f"not wrk output:\n{output}")
    latency = {f"p{p}": float(value) * _UNITS_MS[unit] for p, value, unit in _PERCENTILE.findall(output)}
    if "p99" not in latency:
        raise ValueError(f"no latency distribution (wrk --latency) in:\n{output}")
    socket = _SOCKET.search(output)
    counts = [int(n) for n in socket.groups()] if socket else [0, 0, 0, 0]
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        requests=int(total.group(1)),
        latency_ms=latency,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), counts, strict=True)),
        statuses={int(status): int(n) for status, n in _STATUS.findall(output)},
        steps={step: {"ok": int(ok), "errors": int(errors)} for step, ok, errors in _STEP.findall(output)},
        sent={kind: int(n) for kind, n in _SENT.findall(output)},
    )


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `make bench` installs it (apt-get install -y wrk)")
    return path


def command(
    url: str, script: Path, script_args: list[str], *, threads: int, connections: int, seconds: float
) -> list[str]:
    return [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]


def run(url: str, script: Path, script_args: list[str], *, threads: int, connections: int, seconds: float) -> WrkResult:
    """One wrk run, start to end; raises if wrk fails or prints something we cannot read."""
    argv = command(url, script, script_args, threads=threads, connections=connections, seconds=seconds)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout)


@contextlib.contextmanager
def started(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """wrk in the background (for the soak, which samples memory meanwhile); killed if left early."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:  # noqa: S603
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def finish(process: subprocess.Popen[str], timeout: float) -> WrkResult:
    stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{stdout}\n{stderr}")
    return parse(stdout)
