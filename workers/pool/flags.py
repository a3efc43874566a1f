"""The supervisor's command line: one flag per declared setting (help with the env twin
and the default), parsed and resolved like every other source (see
:mod:`workers.pool.settings`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from workers.pool.settings import OPTIONS, PoolSettings
from workers.pool.sources import resolve


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The supervisor's parser: one flag per setting, help with env twin and default.
    Flags are kept as text here; ``resolve`` parses them like every other source."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a pool of eventbus workers (one process per consumer) for one "
        "tenant, stream, group and handler. Every flag has an EVENTBUS_* environment twin. "
        "Precedence: flag, --env-file, environment, default.",
    )
    for opt in OPTIONS:
        default = "required" if opt.required else f"default {opt.default_text}"
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help} [env {opt.env_name}; {default}]",
        )
    return parser


def parse_settings(
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    prog: str = "eventbus-supervisor",
) -> PoolSettings:
    """Parse ``argv`` and resolve it (argparse exits 2 on unknown flags)."""
    return resolve(build_parser(prog).parse_args(argv), environ)
