"""The operator CLI, ``eventbus``: publish, tail, stats, dlq, acl, supervise."""

from __future__ import annotations

from workers.cli.main import main

__all__ = ["main"]
