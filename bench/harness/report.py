"""The results: one JSON document, and the Markdown and the chart drawn from it alone.

results.json holds everything (settings, commit, row counts, every round's raw numbers); results.md and chart.png
are rendered from that document only, so an old results.json can be rendered again.
"""

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.harness.cases import DEEP, READ, WRITES, Case
from bench.harness.wrk import WrkResult

RATIO_TARGET = 0.70  # service req/s / ceiling req/s, at least
P99_TARGET = 1.5  # service p99 / ceiling p99, at most
SCALE_RPS_TARGET = 0.5  # req/s at the larger scale / at the smaller one, at least (--compare)
SCALE_P50_TARGET = 2.0  # p50 at the larger scale / at the smaller one, at most (--compare)
SIDES = ("service", "ceiling")
STEPS = ("register", "login", "article", "comment", "favorite")


# -- building the document ----------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def side_summary(rounds: list[WrkResult]) -> dict[str, Any]:
    """The median of the rounds for each number (errors: their sum), plus every round as measured."""
    summary: dict[str, Any] = {
        "requests_per_second": statistics.median(r.requests_per_second for r in rounds),
        **{f"{p}_ms": statistics.median(r.latency_ms[p] for r in rounds) for p in ("p50", "p90", "p99")},
        "errors": sum(r.errors for r in rounds),
        "requests": sum(r.requests for r in rounds),
    }
    steps = {s: {k: sum(r.steps.get(s, {}).get(k, 0) for r in rounds) for k in ("ok", "errors")} for s in STEPS}
    if any(r.steps for r in rounds):
        summary["steps"] = steps
    summary["rounds"] = [r.as_json() for r in rounds]
    return summary


def case_entry(case: Case, rounds: dict[str, list[WrkResult]]) -> dict[str, Any]:
    sides = {side: side_summary(rounds[side]) for side in SIDES}
    service, ceiling = sides["service"], sides["ceiling"]
    ratio = _ratio(service["requests_per_second"], ceiling["requests_per_second"])
    p99_ratio = _ratio(service["p99_ms"], ceiling["p99_ms"])
    meets = ratio is not None and p99_ratio is not None and ratio >= RATIO_TARGET and p99_ratio <= P99_TARGET
    return {
        "name": case.name,
        "group": case.group,
        "what": case.what,
        **sides,
        "ratio": ratio,
        "p99_ratio": p99_ratio,
        "meets_targets": meets,
    }


def compare(results: dict[str, Any], path: Path, other: dict[str, Any]) -> dict[str, Any]:
    """This scale against another one's results, case by case, for the same side: req/s and p50 ratios."""
    theirs = {case["name"]: case for case in other["cases"]}
    rows = []
    for case in results["cases"]:
        if case["name"] not in theirs:
            continue
        row: dict[str, Any] = {"name": case["name"]}
        for side in SIDES:
            mine, old = case[side], theirs[case["name"]][side]
            row[side] = {
                "rps_ratio": _ratio(mine["requests_per_second"], old["requests_per_second"]),
                "p50_ratio": _ratio(mine["p50_ms"], old["p50_ms"]),
            }
        service = row["service"]
        row["meets_targets"] = (
            service["rps_ratio"] is not None
            and service["p50_ratio"] is not None
            and service["rps_ratio"] >= SCALE_RPS_TARGET
            and service["p50_ratio"] <= SCALE_P50_TARGET
        )
        rows.append(row)
    return {"against": str(path), "scale": other["scale"], "started_at": other.get("started_at"), "cases": rows}


# -- Markdown -----------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def cases_table(cases: list[dict[str, Any]]) -> list[str]:
    header = ["case", "service req/s", "ceiling req/s", "ratio", "p50 ms service / ceiling"]
    header += ["p99 ms service / ceiling", "p99 ratio", "errors service / ceiling", "targets"]
    rows = []
    for case in cases:
        service, ceiling = case["service"], case["ceiling"]
        rows.append(
            [
                f"`{case['name']}`",
                f"{service['requests_per_second']:,.0f}",
                f"{ceiling['requests_per_second']:,.0f}",
                _num(case["ratio"]),
                f"{_ms(service['p50_ms'])} / {_ms(ceiling['p50_ms'])}",
                f"{_ms(service['p99_ms'])} / {_ms(ceiling['p99_ms'])}",
                _num(case["p99_ratio"]),
                f"{service['errors']:,} / {ceiling['errors']:,}",
                _mark(case["meets_targets"]),
            ]
        )
    return _table(header, rows)


def _steps_table(case: dict[str, Any]) -> list[str]:
    rows = []
    for side in SIDES:
        steps = case[side].get("steps", {})
        rows.append([side] + [f"{steps[s]['ok']:,} / {steps[s]['errors']:,}" if s in steps else "n/a" for s in STEPS])
    return _table(["side (ok / errors)", *STEPS], rows)


def memory_table(memory: dict[str, Any]) -> list[str]:
    rows = []
    for side in SIDES:
        for n, (pid, worker) in enumerate(sorted(memory.get(side, {}).get("workers", {}).items()), start=1):
            sizes = [_mib(worker[key]) for key in ("start_kib", "end_kib", "peak_kib", "hwm_kib")]
            rows.append([side, str(n), pid, *sizes])
    return _table(["side", "worker", "pid", "start MiB", "end MiB", "peak MiB (sampled)", "VmHWM MiB"], rows)


def soak_section(soak: dict[str, Any]) -> list[str]:
    result = soak["result"]
    lines = [
        f"## Soak: {soak['minutes']:g} min of mixed reads against the {soak['side']}",
        "",
        f"{result['requests_per_second']:,.0f} req/s, p50 {_ms(result['latency_ms']['p50'])} ms, "
        f"p99 {_ms(result['latency_ms']['p99'])} ms, {result['errors']:,} errors; RSS sampled every 10 s "
        f"({len(soak['samples'])} samples in results.json). Growth: from the end of the first minute to the end.",
        "",
    ]
    keys = ("start_kib", "peak_kib", "end_kib", "growth_after_first_minute_kib")
    rows = [
        [str(n), pid, *(_mib(w[key]) for key in keys)] for n, (pid, w) in enumerate(sorted(soak["workers"].items()), 1)
    ]
    return lines + _table(["worker", "pid", "start MiB", "peak MiB (sampled)", "end MiB", "growth MiB"], rows)


def compare_section(comparison: dict[str, Any], scale: str) -> list[str]:
    other = comparison["scale"]
    lines = [
        f"## Scale: {scale} against {other}",
        "",
        f"Same side, {scale}/{other}: req/s ratio (target >= {SCALE_RPS_TARGET}) and p50 ratio (target <= "
        f"{SCALE_P50_TARGET:g}); targets are checked on the service. Against `{comparison['against']}`.",
        "",
    ]
    header = ["case", "service req/s", "service p50", "ceiling req/s", "ceiling p50", "targets"]
    rows = [
        [f"`{row['name']}`"]
        + [_num(row[side][key]) for side in SIDES for key in ("rps_ratio", "p50_ratio")]
        + [_mark(row["meets_targets"])]
        for row in comparison["cases"]
    ]
    return lines + _table(header, rows)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    counts = " · ".join(f"{table} {n:,}" for table, n in results["row_counts"].items())
    commit = results["git"]["commit"][:10] + (" (with uncommitted changes)" if results["git"]["dirty"] else "")
    lines = [
        f"# Benchmark: {results['scale']} ({s['users']:,} users, {s['articles']:,} articles)",
        "",
        f"{results['started_at']}, commit {commit}. wrk -t{s['threads']} -c{s['connections']}, {s['duration']} s "
        f"per measurement after {s['warmup']} s of warm-up, median of {s['rounds']} round(s), sides alternating; "
        f"{s['workers']} uvicorn workers per side.",
        "",
        f"- service: {results['sides']['service']}; ceiling: {results['sides']['ceiling']}",
        f"- rows: {counts}",
        f"- targets: ratio (service/ceiling req/s) >= {RATIO_TARGET:.2f} and p99 ratio <= {P99_TARGET:g}; "
        "errors: responses that were not 2xx, plus socket errors, over all rounds",
        "",
    ]
    groups = [(READ, "## Reads"), (DEEP, "## Deep page"), (WRITES, "## Write mix")]
    for group, title in groups:
        cases = [case for case in results["cases"] if case["group"] == group]
        if not cases:
            continue
        lines += [title, "", *cases_table(cases), ""]
        if group == WRITES:
            lines += [
                f"{s['write_clients']} simulated users per side (wrk -t{s['write_clients']} -c{s['write_clients']}), "
                "each registering, logging in, creating an article, commenting and favoriting it in a loop; "
                "registration and login hash passwords with Argon2 by design. Per request:",
                "",
                *_steps_table(cases[0]),
                "",
            ]
    lines += [
        "## Memory: RSS per worker",
        "",
        "Sampled before the first case and after each one. VmHWM is the kernel's high-water mark over the worker's "
        "life: it also catches peaks between samples.",
        "",
    ]
    lines += [*memory_table(results["memory"]), ""]
    if results.get("soak"):
        lines += [*soak_section(results["soak"]), ""]
    if results.get("compare"):
        lines += [*compare_section(results["compare"], results["scale"]), ""]
    return "\n".join(lines)


# -- chart --------------------------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """Throughput ratio per case (line at the 0.70 target) and p99 ratio (line at 1.5), as horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    cases = [case for case in results["cases"] if case["ratio"] is not None and case["p99_ratio"] is not None]
    names = [case["name"] for case in cases]
    height = 1.5 + 0.28 * len(cases)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    panels = [
        (left, "ratio", RATIO_TARGET, "req/s: service / ceiling", True),
        (right, "p99_ratio", P99_TARGET, "p99 latency: service / ceiling", False),
    ]
    for axes, key, target, title, higher_is_better in panels:
        values = [case[key] for case in cases]
        good = [(v >= target) if higher_is_better else (v <= target) for v in values]
        axes.barh(names, values, color=["#4c9f70" if ok else "#d1603d" for ok in good])
        axes.axvline(target, color="black", linestyle="--", linewidth=1)
        axes.set_title(f"{title} (target {'>=' if higher_is_better else '<='} {target:g})", fontsize=10)
        for y, value in enumerate(values):
            axes.annotate(
                f"{value:.2f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
            )
        axes.margins(x=0.15)
    left.invert_yaxis()  # first case on top
    left.tick_params(axis="y", labelsize=8)
    commit = results["git"]["commit"][:10]
    figure.suptitle(f"Conduit benchmark, {results['scale']}: {results['started_at']} ({commit})", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- files --------------------------------------------------------------------------------------------------------


def write(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """results.json, results.md and chart.png in ``directory``, copied to ``latest-<scale>.*`` beside it."""
    files = {"json": directory / "results.json", "md": directory / "results.md", "png": directory / "chart.png"}
    files["json"].write_text(json.dumps(results, indent=2) + "\n")
    files["md"].write_text(markdown(results))
    chart(results, files["png"])
    for suffix, path in files.items():
        shutil.copyfile(path, directory.parent / f"latest-{results['scale']}.{suffix}")
    return files
