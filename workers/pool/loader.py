"""Handlers named by import path, ``package.module:function`` (or a class with
``__call__``, instantiated with no arguments), loaded in each worker process."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from eventbus.handler import Handler


class HandlerLoadError(ValueError):
    """The handler path cannot be imported or does not name a callable."""


def load_handler(path: str) -> Handler:
    module_name, sep, attr_path = path.partition(":")
    if not (module_name and sep and attr_path):
        raise HandlerLoadError(f"handler {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises on import
        raise HandlerLoadError(
            f"cannot import handler module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerLoadError(
                f"handler {path!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if inspect.isclass(target):
        try:
            target = target()
        except Exception as exc:
            raise HandlerLoadError(f"handler class {path!r} failed to start: {exc}") from exc
    if not callable(target):
        raise HandlerLoadError(f"handler {path!r} is not callable")
    return target  # type: ignore[no-any-return]
