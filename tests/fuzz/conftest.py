"""Fixtures of ``make fuzz``: the service started in process on a fresh, migrated database of each backend (the
suite's own ``database_url`` fixture), and per test (one operation, one pass) a fuzzer with a fresh scene."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from schemathesis.python import asgi

from service.core import migrations
from service.core.config import load_settings
from service.main import create_app
from tests.fuzz.scene import MAX_EXAMPLES, SEED, Fuzzer, Seeder, Stats, empty_database, in_thread, run_coroutine

STATS = pytest.StashKey[Stats]()


@pytest.fixture(scope="session")
def fuzz_database(database_url: str) -> str:
    in_thread(migrations.upgrade, database_url)
    return database_url


@pytest.fixture
def fuzz_app(fuzz_database: str) -> Iterator[FastAPI]:
    """Per test (one operation, one pass): an empty database and a new app (so new rate-limit counters). Each
    test's outcome is then a function of its seed alone, whatever ran before it (pytest-xdist does not keep the
    order), and a failure reproduces when that test runs by itself."""
    run_coroutine(lambda: empty_database(fuzz_database))
    settings = load_settings(
        environment="test",
        database_url=fuzz_database,
        redis_url=None,
        log_format="json",
        log_level="WARNING",  # no access log line per generated request; errors still show
        # The per-address limits would stop the seeding (two registrations and a login per operation); the
        # per-account limit on failed logins stays, so 429 is exercised and checked against the schema too.
        rate_limit_register_address="100000/hour",
        rate_limit_login_address="100000/hour",
    )
    app = create_app(settings)
    yield app
    asgi.shutdown_lifespans()  # the app's engine and its connections close with the test


@pytest.fixture
def seeder(fuzz_app: FastAPI, fuzz_database: str) -> Seeder:
    return Seeder(fuzz_app, fuzz_database)


def _fuzzer(request: pytest.FixtureRequest, seeder: Seeder, *, with_token: bool) -> Fuzzer:
    backend = "sqlite" if seeder.database_url.startswith("sqlite") else "postgresql"
    stats = Stats(f"{backend}, {'with a token' if with_token else 'anonymous'}")
    request.node.stash[STATS] = stats
    return Fuzzer(seeder, with_token=with_token, stats=stats)


@pytest.fixture
def anonymous(request: pytest.FixtureRequest, seeder: Seeder) -> Fuzzer:
    return _fuzzer(request, seeder, with_token=False)


@pytest.fixture
def with_token(request: pytest.FixtureRequest, seeder: Seeder) -> Fuzzer:
    return _fuzzer(request, seeder, with_token=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``) each backend's tests run on one worker: one database and one app
    per backend and worker, never torn down and rebuilt as tests of the two backends alternate."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("fuzz") and callspec is not None and "database_url" in callspec.params:
            item.add_marker(pytest.mark.xdist_group(f"fuzz-{callspec.params['database_url']}"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """The test's numbers ride on its report as a plain dict (what pytest-xdist can send to the controller)."""
    if call.when == "call" and STATS in item.stash:
        properties = [(name, value) for name, value in item.user_properties if name != "fuzz"]
        item.user_properties[:] = [*properties, ("fuzz", item.stash[STATS].as_property())]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    per_test: dict[str, dict[str, Any]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "fuzz":
                    per_test[report.nodeid] = value
    if not per_test:
        return
    passes: dict[str, dict[str, Any]] = {}
    for value in per_test.values():
        total = passes.setdefault(value["name"], {"cases": 0, "operations": 0, "seconds": 0.0, "statuses": {}})
        total["cases"] += value["cases"]
        total["operations"] += value["operations"]
        total["seconds"] += value["seconds"]
        for code, count in value["statuses"].items():
            total["statuses"][code] = total["statuses"].get(code, 0) + count
    terminalreporter.section("schema fuzzing (schemathesis)")
    for name, total in sorted(passes.items()):
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(total["statuses"].items()))
        terminalreporter.write_line(
            f"{name}: {total['cases']} cases over {total['operations']} operations "
            f"in {total['seconds']:.1f} s ({statuses})"
        )
    cases = sum(total["cases"] for total in passes.values())
    terminalreporter.write_line(f"total: {cases} generated cases (seed {SEED}, {MAX_EXAMPLES} fuzzed per operation)")
