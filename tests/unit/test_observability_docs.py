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
