"""Pure modules import nothing that does I/O, even indirectly (checked in a fresh
interpreter, since this one has redis loaded already)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "eventbus.schemas",
    "eventbus.contract",
    "eventbus.retry",
    "eventbus.intake",
    "eventbus.records",
    "eventbus.keys",
    "eventbus.guards",
    "eventbus.fairness",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_does_not_import_redis(module: str) -> None:
    code = (
        f"import sys, {module}; print(sorted(m for m in ('redis', 'socket') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['socket']" or out.stdout.strip() == "[]", out.stdout
    assert "redis" not in out.stdout
