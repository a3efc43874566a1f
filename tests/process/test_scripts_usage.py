"""The scripts the README shows answer --help and refuse a bad argument before doing
anything: install-systemd runs as root and must not install a pool named '--help'."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _install_systemd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run it with every path it writes under tmp_path and a `useradd` that fails, so that
    a regression that goes on to install cannot touch the machine."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name in ("useradd", "id"):
        (stubs / name).write_text("#!/bin/sh\nexit 1\n")
        (stubs / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "EVENTBUS_PREFIX": str(tmp_path / "opt"),
        "EVENTBUS_UNIT_DIR": str(tmp_path / "units"),
        "EVENTBUS_CONF_DIR": str(tmp_path / "etc"),
    }
    return subprocess.run(
        [str(ROOT / "scripts" / "install-systemd"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_install_systemd_help_prints_usage_and_installs_nothing(tmp_path: Path, flag: str) -> None:
    result = _install_systemd(tmp_path, flag)
    assert (result.returncode, result.stderr) == (0, "")
    assert "usage:" in result.stdout and "POOL" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


@pytest.mark.parametrize("pool", ["--force", "../etc", "a b", ""])
def test_install_systemd_refuses_a_bad_pool_name_in_one_line(tmp_path: Path, pool: str) -> None:
    result = _install_systemd(tmp_path, pool)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"install-systemd: error: invalid pool name '{pool}': use letters, digits, '_', "
        "'-', '.' (not first), 1 to 64 characters"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_start_pool_help_and_a_missing_env_file(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "start-pool")
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ")
    missing = str(tmp_path / "nope.env")
    refused = subprocess.run([script, missing], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last == f"start-pool: error: no env file or config file '{missing}'"
