"""The chaos run's ledger: recovery times per fault kind, and the printed report."""

from __future__ import annotations

import statistics
from typing import Any


def recovery_times(injected: list[tuple[str, float]], handled: list[float]) -> dict[str, Any]:
    """Per kind: seconds from the end of each fault until the next handled event."""
    ordered = sorted(handled)
    per_kind: dict[str, list[float]] = {}
    for kind, at in injected:
        after = next((t for t in ordered if t > at), None)  # ordered: first one is the next
        if after is not None:
            per_kind.setdefault(kind, []).append(after - at)
    out: dict[str, Any] = {}
    for kind, values in sorted(per_kind.items()):
        out[kind] = {
            "max_s": round(max(values), 3),
            "median_s": round(statistics.median(values), 3),
        }
    every = [v for values in per_kind.values() for v in values]
    if every:
        out["all"] = {"max_s": round(max(every), 3), "median_s": round(statistics.median(every), 3)}
    return out


def report_text(report: dict[str, Any]) -> str:
    """The ledger as the chaos run shows it to its operator (the caller writes it out)."""
    lines = ["chaos ledger"]
    for key in ("seed", "duration_s", "drain_s", "published", "handled", "dead_lettered"):
        lines.append(f"  {key:<22} {report.get(key)}")
    lines += [
        f"  {'lost':<22} {report.get('lost')}  (must be 0)",
        f"  {'duplicates':<22} {report.get('duplicates')}  (handled more than once)",
        f"  {'handler_calls':<22} {report.get('handler_calls')}",
        f"  {'publish_errors':<22} {report.get('publish_errors')}  (retried: same event)",
        f"  {'faults':<22} {report.get('faults')}",
    ]
    for kind, times in report.get("recovery", {}).items():
        lines.append(f"  recovery {kind:<13} max {times['max_s']}s  median {times['median_s']}s")
    lines.append(f"  {'worker_respawns':<22} {report.get('worker_respawns')}")
    if report.get("lost"):
        lines.append(
            f"  LOST (first 20): {report.get('lost_ids')}; files kept in {report['workdir']}"
        )
    return "\n".join(lines) + "\n"
