"""Logging set-up: structlog, JSON lines in services, a console renderer on a TTY.

Call :func:`configure_logging` once per process (again in each child after a fork or
spawn). The library itself only asks for loggers; it never configures anything.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Literal

import structlog

Format = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(level: str = "info", fmt: Format = "auto") -> None:
    """JSON lines (``fmt="json"``), a colour console (``"console"``), or ``"auto"``:
    console when stderr is a TTY, JSON otherwise. Logs go to stderr."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, got {fmt!r}")
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_log_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


#: The log context of the block in hand (a delivery...): one dict, set once per block,
#: expanded into each line by :func:`merge_log_context` (only lines logged pay for it).
_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("eventbus_log_context", default=None)


def merge_log_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the keys bound by :func:`bind` / :class:`log_context` (the
    consumer's per-delivery context) into each line, without overriding the line's own.
    :func:`configure_logging` puts it after ``merge_contextvars``; an application that
    configures structlog itself adds it to its processors."""
    context = _CONTEXT.get()
    if context:
        for key, value in context.items():
            event_dict.setdefault(key, value)
    return event_dict


def bind(values: dict[str, Any]) -> Token[dict[str, Any] | None]:
    """Bind ``values`` (over the keys already bound) to the context-local log context;
    give the token to :func:`reset` in a ``finally``. ``values`` is kept, not copied, when
    nothing is bound yet: pass a dict of your own. One ``ContextVar.set`` whatever the
    number of keys (the per-delivery hot path: one structlog ContextVar per key cost
    about 1.4 us per event)."""
    outer = _CONTEXT.get()
    return _CONTEXT.set({**outer, **values} if outer else values)


def reset(token: Token[dict[str, Any] | None]) -> None:
    """Restore the log context that :func:`bind` replaced."""
    _CONTEXT.reset(token)


class log_context:  # noqa: N801  (used like a function: ``with log_context(...)``)
    """Bind keys to the context-local log context for a block (see :func:`bind`), then
    restore it."""

    __slots__ = ("_kw", "_token")

    def __init__(self, **kw: Any) -> None:
        self._kw = kw

    def __enter__(self) -> None:
        self._token = bind(self._kw)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        reset(self._token)
