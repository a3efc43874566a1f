"""The shipped dashboard and alert rules name only metrics the pool serves, and the
README documents every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eventbus.metrics import COUNTERS, HISTOGRAMS
from workers.pool.metrics import GAUGES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "observability"

SERVED = (
    {name + "_total" for name, _, _ in COUNTERS.values()}
    | {name for name, _ in HISTOGRAMS.values()}
    | {name for name, _ in GAUGES.values()}
    | {"eventbus_redis_up", "eventbus_workers", "eventbus_workers_ready"}
)


def named(text: str) -> set[str]:
    found = set(re.findall(r"\beventbus_[a-z_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in found}


def test_dashboard_is_json_and_queries_served_metrics_only() -> None:
    text = (DOCS / "grafana-dashboard.json").read_text()
    dashboard = json.loads(text)
    assert dashboard["panels"]
    assert named(text) <= SERVED, named(text) - SERVED


def test_alert_rules_use_served_metrics_only() -> None:
    text = (DOCS / "alerts.yml").read_text()
    assert {"EventbusDLQGrowing", "EventbusLagGrowing", "EventbusOldestPendingTooOld"} <= set(
        re.findall(r"alert: (\w+)", text)
    )
    assert named(text) <= SERVED, named(text) - SERVED


def test_readme_documents_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name for name in SERVED if f"`{name}`" not in readme}
    assert not missing, missing


def test_every_metric_the_readme_names_is_served() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Metrics", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (`eventbus_.*?) \|", table, re.M)
    documented = {name for row in rows for name in re.findall(r"`(eventbus_[a-z_]+)`", row)}
    assert len(rows) > 10 and documented - SERVED == set()
    section = readme.split("## Observability", 1)[1].split("\n## ", 1)[0]
    assert named(section) - SERVED == set(), "README names a metric the pool does not serve"
