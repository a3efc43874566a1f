"""The benchmark runs end to end at a tiny size and reports every section with numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from workers.tools.bench_report import SECTIONS

ROOT = Path(__file__).parents[2]


def test_bench_smoke_reports_every_section_with_numbers_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "workers.tools.bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["sections"]) == set(SECTIONS)
    for section in SECTIONS:
        lines = doc["sections"][section]
        assert lines, f"section {section} is empty"
        for line in lines:
            for side in ("ours", "plain"):
                stats = line[side]
                assert stats["samples"], (section, line["name"], side)
                assert all(v > 0 for v in stats["samples"]), (section, line["name"], side)
                assert stats["min"] <= stats["median"] <= stats["max"]
            ratio = line["ratio"]
            assert math.isfinite(ratio) and ratio > 0, (section, line["name"])
            expected = line["ours"]["median"] / line["plain"]["median"]
            assert math.isclose(ratio, expected, rel_tol=1e-2, abs_tol=1e-3)
    names = {line["name"] for line in doc["sections"]["end_to_end"]}
    assert any("backlog" in n for n in names) and any("publisher" in n for n in names)
    assert "publish_many" in " ".join(line["name"] for line in doc["sections"]["publish"])
    assert all(line["met"] is not None for line in doc["sections"]["rss"])
    assert "ratio" in run.stdout and "publish one by one" in run.stdout  # the table
