"""Soak the service (``make soak``): minutes of mixed reads and writes on PostgreSQL, a table per minute.

Against the service alone, as the bench runs it (uvicorn, 2 workers, rate limits off), on the bench database of the
scale (seeded once and kept, see ``bench/harness/database.py``; or ``--database``). Per minute: requests, writes,
errors (responses that were not 2xx, and socket errors), p50 and p99 latency, the workers' CPU time per request and
the load average (what tells a slower service from a busier machine), and each worker's RSS at the end of the
minute; then a verdict: RSS growth per worker after the first minute and the last minute's p99 against the first's,
each against a tolerance. The exit status is 1 when any request failed, whatever the verdict says.

    make soak                                   # 5 minutes at 10k (1,000 users, 10,000 articles)
    make soak ARGS="--minutes 1"                # a quick look
    make soak ARGS="--minutes 30 --write-percent 5"

Needs PostgreSQL on 127.0.0.1:5432 (``--admin-url``) and wrk. Writes ``bench/results/<UTC time>-soak-<scale>/``.
"""

import argparse
import signal
import sys
from types import FrameType

from bench.harness.options import DEFAULT_CONNECTIONS, SCALES, Options
from bench.harness.soak import SEGMENT_S, SoakOptions, run


def parse_args(argv: list[str] | None = None) -> SoakOptions:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=5, help="minutes of load, one table row each (default 5)")
    parser.add_argument(
        "--scale", choices=SCALES, default="10k", help="10k: 1,000 users and 10,000 articles; 1m: 100,000 and 1,000,000"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2, as the bench)")
    parser.add_argument("--connections", type=int, help="wrk connections (default 64 at 10k, 16 at 1m, as the bench)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--write-percent", type=float, default=2.0, help="share of requests that are writes (default 2 %%)"
    )
    parser.add_argument(
        "--rss-tolerance", type=float, default=5.0, help="flat RSS: growth per worker after minute 1 (default 5 %%)"
    )
    parser.add_argument(
        "--p99-tolerance", type=float, default=25.0, help="flat p99: last minute above the first (default 25 %%)"
    )
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a maintenance database on the PostgreSQL server; the bench database is created beside it",
    )
    parser.add_argument(
        "--database",
        help="the database to seed and use (default conduit_bench_<scale>, the bench's); a bench run starting "
        "meanwhile on the same one deletes the soak's writers",
    )
    parser.add_argument("--reseed", action="store_true", help="drop the database and seed it again")
    args = parser.parse_args(argv)
    if min(args.minutes, args.workers, args.threads) < 1:
        parser.error("--minutes, --workers and --threads must be at least 1")
    if not 0 < args.write_percent <= 50:
        parser.error("--write-percent must be above 0 and at most 50")
    if args.rss_tolerance < 0 or args.p99_tolerance < 0:
        parser.error("--rss-tolerance and --p99-tolerance must be at least 0")
    connections = args.connections or DEFAULT_CONNECTIONS[args.scale]
    if connections < args.threads:
        parser.error("--connections must be at least --threads (wrk gives every thread its own connections)")
    users, articles = SCALES[args.scale]
    bench = Options(
        scale=args.scale,
        users=users,
        articles=articles,
        duration=SEGMENT_S,  # the soak's segments; the measurement fields of the bench below are not used
        warmup=0,
        rounds=1,
        connections=connections,
        threads=args.threads,
        workers=args.workers,
        only=None,
        admin_url=args.admin_url,
        reseed=args.reseed,
        soak_minutes=args.minutes,
        writes=True,
        compare=None,
        ceiling="auto",
    )
    database = args.database or bench.database
    return SoakOptions(bench, args.minutes, args.write_percent, args.rss_tolerance, args.p99_tolerance, database)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C does: the service is stopped on the way out


def main() -> None:
    options = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        errors = run(options)
    except KeyboardInterrupt:
        print("\ninterrupted; the service was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    main()
