"""The README's table of ``eventbus web`` flags is the console's parser: every row names a
real flag, its environment twin and the default the parser uses, and no flag is missing."""

from __future__ import annotations

import re
from pathlib import Path

from workers.console.settings import ENV_NAMES, build_parser, parse_settings

ROOT = Path(__file__).parents[2]
# README cell of a flag -> ConsoleSettings field
FIELDS = {"--tenant": "default_tenant"}


def _readme_rows() -> list[tuple[list[str], list[str], str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Web console: `eventbus web`", 1)[1].split("\n## ", 1)[0]
    table = section.split("| flag | env | default | what |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        flag, env, default = (cell.strip() for cell in line.strip("|").split("|")[:3])
        flags = re.findall(r"`(--[a-z-]+)`", flag)
        envs = re.findall(r"`(EVENTBUS_[A-Z_]+)`", env)
        for suffix in re.findall(r"`\.\.\.(_[A-Z]+)`", env):  # `..._KEY`: same prefix
            envs.append(envs[0].rsplit("_", 1)[0] + suffix)
        rows.append((flags, envs, default.strip("`")))
    return rows


def test_readme_table_lists_every_flag_and_env_twin_of_eventbus_web() -> None:
    rows = _readme_rows()
    documented_flags = {f for flags, _, _ in rows for f in flags}
    documented_envs = {e for _, envs, _ in rows for e in envs}
    parser_flags = {
        s for action in build_parser({})._actions for s in action.option_strings if s != "-h"
    } - {"--help"}
    assert documented_flags == parser_flags
    assert documented_envs == set(ENV_NAMES)


def test_readme_defaults_of_eventbus_web_are_the_defaults_used() -> None:
    used = parse_settings([], {})
    for flags, _, default in _readme_rows():
        if not default:  # unset: nothing to compare
            continue
        field = FIELDS.get(flags[0], flags[0].removeprefix("--").replace("-", "_"))
        value = getattr(used, field)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert shown == default, (flags, default, value)


def test_each_env_twin_of_eventbus_web_sets_its_flag() -> None:
    for flags, envs, _ in _readme_rows():
        for flag, env in zip(flags, envs, strict=True):
            action = next(a for a in build_parser({})._actions if flag in a.option_strings)
            changed = next(a for a in build_parser({env: "7"})._actions if a.dest == action.dest)
            assert changed.default == "7", (flag, env)


def test_systemd_web_env_sets_only_variables_of_eventbus_web_and_parses() -> None:
    lines = (ROOT / "systemd" / "web.env").read_text(encoding="utf-8").splitlines()
    pairs = [line.lstrip("#").split("=", 1) for line in lines if "=" in line]
    assert {name for name, _ in pairs} <= set(ENV_NAMES)
    environ = {name: value for name, value in pairs if "TLS" not in name}  # files: not here
    settings = parse_settings([], environ)
    assert (settings.port, settings.default_tenant, settings.read_only) == (8080, "acme", False)
