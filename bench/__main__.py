"""Benchmark the service against its ceiling with wrk, the way production runs it (``make bench``).

The ceiling (``bench/ceiling.py``) is the same API written as directly as possible on the same database: the
ratio of the service's throughput to the ceiling's says what the framework layers cost. Both sides run under
uvicorn with the same number of workers and the same pool size, on a PostgreSQL database seeded once per scale
and kept between runs. Each case runs on both sides, in alternating order, and the median of the rounds is reported.

    make bench                                                # 10k: 1,000 users, 10,000 articles
    make bench ARGS="--duration 3 --warmup 1 --rounds 1"      # a quick look
    make bench ARGS="--only 'list|feed' --no-writes"          # some cases
    make bench ARGS="--scale 1m --compare bench/results/latest-10k.json"
    make bench ARGS="--soak 5"                                # plus 5 minutes of mixed reads, memory sampled

Needs PostgreSQL on 127.0.0.1:5432 (``--admin-url``) and wrk. Results: ``bench/results/`` (see its README.md).
"""

import argparse
import importlib.util
import re
import signal
import sys
from pathlib import Path
from types import FrameType

from bench.harness.options import DEFAULT_CONNECTIONS, SCALES, Options, scale_label
from bench.harness.run import run


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", choices=SCALES, default="10k", help="10k: 1,000 users and 10,000 articles; 1m: 100,000 and 1,000,000"
    )
    parser.add_argument("--users", type=int, help="seeded users (overrides the scale's)")
    parser.add_argument("--articles", type=int, help="seeded articles (overrides the scale's)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of discarded load before each (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per case and side; the median is reported")
    parser.add_argument("--connections", type=int, help="wrk connections (default 64 at 10k, 16 at 1m)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers on each side (default 2)")
    parser.add_argument(
        "--only", metavar="REGEX", help="only the cases whose name matches, e.g. 'list|feed' or ':token$'"
    )
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a maintenance database on the PostgreSQL server; the bench database is created beside it",
    )
    parser.add_argument("--reseed", action="store_true", help="drop the bench database and seed it again")
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        metavar="MINUTES",
        help="then mixed reads against the service for MINUTES, memory every 10 s",
    )
    parser.add_argument("--no-writes", action="store_true", help="skip the write mix")
    parser.add_argument("--compare", type=Path, metavar="JSON", help="another scale's results.json: add scale ratios")
    parser.add_argument(
        "--ceiling",
        choices=("auto", "ceiling", "service"),
        default="auto",
        help="the ceiling side: bench/ceiling.py, or a second service instance ('auto': the first if it exists)",
    )
    args = parser.parse_args(argv)
    preset_users, preset_articles = SCALES[args.scale]
    users = preset_users if args.users is None else args.users
    articles = preset_articles if args.articles is None else args.articles
    scale = scale_label(users, articles)
    if min(args.duration, args.rounds, args.threads, args.workers) < 1 or args.warmup < 0 or args.soak < 0:
        parser.error("--duration, --rounds, --threads and --workers must be at least 1; --warmup and --soak at least 0")
    try:
        re.compile(args.only or "")
    except re.error as exc:
        parser.error(f"--only: {exc}")
    if importlib.util.find_spec("matplotlib") is None:  # the chart is drawn at the very end: say so before the run
        parser.error("matplotlib is missing: pip install --require-hashes -r requirements-bench.txt (make bench does)")
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare: no such file {args.compare}")
    connections = args.connections or DEFAULT_CONNECTIONS[args.scale]
    if connections < args.threads:
        parser.error("--connections must be at least --threads (wrk gives every thread its own connections)")
    return Options(
        scale=scale,
        users=users,
        articles=articles,
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=connections,
        threads=args.threads,
        workers=args.workers,
        only=args.only,
        admin_url=args.admin_url,
        reseed=args.reseed,
        soak_minutes=args.soak,
        writes=not args.no_writes,
        compare=args.compare,
        ceiling=args.ceiling,
    )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C does: every server is stopped on the way out


def main() -> None:
    options = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run(options)
    except KeyboardInterrupt:
        print("\ninterrupted; the servers were stopped", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
