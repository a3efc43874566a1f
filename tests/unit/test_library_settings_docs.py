"""The README's API table shows BusSettings and ConsumerSettings with every field and the
default the library uses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from eventbus.settings import BusSettings, ConsumerSettings

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("cls", [BusSettings, ConsumerSettings])
def test_readme_shows_every_setting_with_its_default(cls: type) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(rf"`{cls.__name__}\(([^)`]*)\)`", readme)
    assert shown, f"README's API table should show {cls.__name__}(...)"
    pairs = dict(part.strip().split("=", 1) for part in shown.group(1).split(","))
    defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
    assert list(pairs) == list(defaults)
    for name, text in pairs.items():
        value = text == "True" if text in ("True", "False") else float(text)
        assert value == defaults[name], (name, text, defaults[name])
