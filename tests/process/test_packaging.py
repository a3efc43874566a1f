"""The wheel ships the library, the pool and the CLI with their data files, and none of
the developer tools (benchmark, chaos run, demo, private redis-server launcher)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_wheel_has_the_library_pool_and_cli_but_no_developer_tools(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("eventbus-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    lua = {p.name for p in (ROOT / "eventbus" / "lua").glob("*.lua")}
    assert {f"eventbus/lua/{name}" for name in lua} <= names
    assert {"eventbus/py.typed", "workers/py.typed"} <= names
    assert {"workers/pool/supervisor.py", "workers/cli/main.py", "workers/examples.py"} <= names
    tools = sorted(n for n in names if n.startswith("workers/tools/") or "localredis" in n)
    assert tools == []
    assert not any(n.startswith("tests/") for n in names)
