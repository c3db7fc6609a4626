"""docs/observability: the alert rules and the Grafana dashboard are valid, and name only metrics that the service
really exports (compared with a scrape of a live app, after requests that fill every series)."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from service.core.config import Settings
from service.main import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability"
# Not the service's: Prometheus's own series per target, and the blackbox exporter's probe of /health/ready.
EXTERNAL = {"up", "probe_success"}
# The PromQL words the files use; any other identifier outside label matchers is taken for a metric name.
PROMQL = {
    "sum", "rate", "histogram_quantile", "by", "without", "max", "min", "avg", "count", "irate", "increase",
    "and", "or", "unless", "on", "ignoring", "bool", "label_values",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    text = _STRINGS.sub("", _RANGES.sub("", _MATCHERS.sub("", expr)))
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL}


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DOCS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DOCS / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture
async def exported(settings: Settings, engine: Any) -> set[str]:
    """Every sample name a live app's /metrics shows, its lifespan run (the pool gauges) and requests made."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as started:
        state: dict[str, Any] = dict(started or {})

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = {**scope.get("state", {}), **state}
            await app(scope, receive, send)

        async with AsyncClient(transport=ASGITransport(app=asgi), base_url="http://test") as client:
            assert (await client.get("/api/tags")).status_code == 200
            text = (await client.get("/metrics")).text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warn"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
    exprs = " ".join(rule["expr"] for rule in rules)
    # What the brief of these rules asks for: 5xx ratio, p99, down/readiness, pool saturation, database 503s.
    for needed in ('status=~"5.."', "histogram_quantile(0.99", "up{", "probe_success", "db_pool_", 'status="503"'):
        assert needed in exprs, needed


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads((DOCS / "dashboard.json").read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat"}
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_is_exported(source: str, exported: set[str]) -> None:
    exprs = [rule["expr"] for rule in alert_rules()] if source == "alerts" else dashboard_exprs()
    named = set().union(*(metric_names(expr) for expr in exprs))
    assert named, exprs
    missing = named - exported - EXTERNAL
    assert not missing, f"named in {source} but not on /metrics: {sorted(missing)}"


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    subprocess.run([promtool, "check", "rules", str(DOCS / "alerts.yml")], check=True, capture_output=True)  # noqa: S603
    # The dashboard's queries, with Grafana's variables filled in, as recording rules: promtool parses each.
    filled = [
        expr.replace("$__rate_interval", "5m").replace("$job", "conduit").replace("$instance", ".*")
        for expr in dashboard_exprs()
    ]
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(filled)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    assert done.returncode == 0, done.stdout + done.stderr
