"""Benchmark report: lines of ours vs the plain baseline (median of repetitions, with
min and max), their ratio and target, printed as a table and written as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECTIONS = ("publish", "guards", "end_to_end", "latency", "scaling", "memory", "rss", "fairness")


@dataclass
class Line:
    """One comparison. ``target`` is ``(what, bound)`` with ``what`` one of ``ratio>=``,
    ``ratio<=`` or ``ours<=`` (an absolute bound in ``unit``), or None."""

    section: str
    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)
    target: tuple[str, float] | None = None
    baseline: str = "plain"

    @property
    def ratio(self) -> float:
        plain = statistics.median(self.plain)
        return statistics.median(self.ours) / plain if plain else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        what, bound = self.target
        if what == "ratio>=":
            return self.ratio >= bound
        if what == "ratio<=":
            return self.ratio <= bound
        return statistics.median(self.ours) <= bound

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "better": "higher" if self.unit.endswith("/s") else "lower",
            "baseline": self.baseline,
            "ours": _stats(self.ours),
            "plain": _stats(self.plain),
            "ratio": round(self.ratio, 3),
            "target": None if self.target is None else f"{self.target[0]} {self.target[1]}",
            "met": self.met,
        }


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": values,
    }


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(values: list[float]) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    if len(values) == 1:
        return _num(med)
    return f"{_num(med)} [{_num(lo)}-{_num(hi)}]"


def _target(line: Line) -> str:
    if line.target is None:
        return ""
    what, bound = line.target
    mark = "ok" if line.met else "MISSED"
    label = {"ratio>=": ">=", "ratio<=": "<="}.get(what, f"ours <= {_num(bound)}")
    return f"{label}{_num(bound) if what.startswith('ratio') else ''} {mark}"


def table(lines: list[Line]) -> str:
    rows = [("section", "line", "unit", "ours", "baseline", "ratio", "target")]
    for line in lines:
        rows.append(
            (
                line.section,
                line.name,
                line.unit,
                _cell(line.ours),
                f"{_cell(line.plain)} ({line.baseline})",
                f"{line.ratio:.2f}",
                _target(line),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(path: Path, lines: list[Line], meta: dict[str, Any]) -> None:
    doc: dict[str, Any] = {"meta": meta, "sections": {s: [] for s in SECTIONS}}
    for line in lines:
        doc["sections"][line.section].append(line.as_json())
    path.write_text(json.dumps(doc, indent=2) + "\n")
