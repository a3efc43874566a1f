"""The README's module map (Development) names every module of the library, the CLI and
the console, so a newcomer finds the right file from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _module_map() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Development", 1)[1].split("```", 2)[1]


# each package's part of the map: from its heading to the next one
PARTS = {
    "eventbus": ("eventbus/", "workers/"),
    "workers/cli": ("  cli/", "  console/"),
    "workers/console": ("  console/", "  parsers.py"),
}


@pytest.mark.parametrize("package", sorted(PARTS))
def test_the_module_map_names_every_module(package: str) -> None:
    start, end = PARTS[package]
    part = _module_map().split(start, 1)[1].split(end, 1)[0]
    named = set(re.findall(r"\b(\w+)\.py\b", part))
    modules = {p.stem for p in (ROOT / package).glob("*.py") if not p.stem.startswith("__")}
    assert modules - named == set(), f"README's module map lacks these modules of {package}"
