"""Text -> value parsers shared by the programs: the pool's settings and the ``eventbus``
CLI's arguments. Each raises ValueError saying what is wrong; ``__name__`` says what it
accepts (argparse shows it in its error)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_least_int(minimum: int) -> Callable[[str], int]:
    """A parser of integers >= ``minimum``."""

    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def at_least_float(minimum: float) -> Callable[[str], float]:
    """A parser of numbers >= ``minimum`` (NaN is refused)."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not value >= minimum:  # also rejects NaN
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"number >= {minimum}"
    return parse


def or_none(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, except that an empty value means None (unset)."""

    def parse_or_none(raw: str) -> T | None:
        return None if raw.strip() == "" else parse(raw)

    parse_or_none.__name__ = f"{parse.__name__} or empty"
    return parse_or_none


def boolean(raw: str) -> bool:
    """1/true/yes/on or 0/false/no/off/empty, in any case."""
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def one_of(*choices: str) -> Callable[[str], str]:
    """One of ``choices``, in any case; returns it in lower case."""

    def parse(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.lower()

    parse.__name__ = "one of " + ", ".join(choices)
    return parse


def seconds_list(raw: str) -> tuple[float, ...]:
    """Comma-separated numbers of seconds, e.g. ``1,4,16`` (empty parts are skipped)."""
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be comma-separated seconds, e.g. 1,4,16") from None


def import_path(raw: str) -> str:
    """``package.module:function`` (only its shape is checked; importing comes later)."""
    module, sep, attr = raw.partition(":")
    if not (module and sep and attr):
        raise ValueError("must look like package.module:function")
    return raw
