"""What one run measures: the scale, the load and which cases, as parsed from the command line."""

import re
from dataclasses import dataclass
from pathlib import Path

# name -> (users, articles) seeded with `service seed`
SCALES: dict[str, tuple[int, int]] = {"10k": (1_000, 10_000), "1m": (100_000, 1_000_000)}
# wrk connections when --connections is not given: the issue measured 1m with 16
DEFAULT_CONNECTIONS: dict[str, int] = {"10k": 64, "1m": 16}
SEED = 1  # `service seed --seed`: the same data on every machine
PASSWORD = "password123"  # noqa: S105 - the seeded users' documented demo password
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
LUA = REPO / "bench" / "lua"


@dataclass(frozen=True)
class Options:
    scale: str  # "10k", "1m", or "u<users>-a<articles>" when --users/--articles leave the presets
    users: int
    articles: int
    duration: int  # seconds per measurement
    warmup: int  # seconds of discarded load before each measurement
    rounds: int
    connections: int
    threads: int
    workers: int  # uvicorn workers, on each side
    only: str | None  # regex on case names
    admin_url: str  # a maintenance database on the server; the bench database sits next to it
    reseed: bool
    soak_minutes: float  # 0: no soak
    writes: bool
    compare: Path | None  # another scale's results.json
    ceiling: str  # "auto", "ceiling" (bench/ceiling.py) or "service" (a second service instance stands in)

    @property
    def database(self) -> str:
        return "conduit_bench_" + self.scale.replace("-", "_")

    def selects(self, case: str) -> bool:
        return self.only is None or re.search(self.only, case) is not None


def scale_label(users: int, articles: int) -> str:
    """The preset's name when the counts are a preset's, else one made of the counts."""
    for name, counts in SCALES.items():
        if counts == (users, articles):
            return name
    return f"u{users}-a{articles}"
