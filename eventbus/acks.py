"""Acks of handled deliveries, sent in batches: with the consumer's next read (one round
trip), or flushed when the oldest is 0.1 s old or before anything that could deliver the
same entries again. Acks are idempotent, so any that may not have arrived are kept."""

from __future__ import annotations

import time

from eventbus.errors import BusConnectionError
from eventbus.groupstream import GroupStream

MAX_AGE_S = 0.1  # a handled entry is acknowledged within about this


class AckBuffer:
    def __init__(self, group: GroupStream) -> None:
        self._group = group
        self._pending: dict[str, list[str]] = {}
        self._since = 0.0

    def add(self, key: str, message_id: str) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.setdefault(key, []).append(message_id)

    def old(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._since > MAX_AGE_S

    def take(self) -> dict[str, list[str]]:
        """Hand the acks over (to go with a read); :meth:`put_back` if that failed."""
        acks, self._pending = self._pending, {}
        return acks

    def put_back(self, acks: dict[str, list[str]]) -> None:
        if acks and not self._pending:
            self._since = time.monotonic()
        for key, ids in acks.items():
            self._pending.setdefault(key, []).extend(ids)

    def flush(self) -> None:
        """XACK everything now; on a connection error the acks are kept and it re-raises."""
        acks = self.take()
        if not acks:
            return
        try:
            self._group.ack(acks)
        except BusConnectionError:
            self.put_back(acks)
            raise

    def clear(self) -> None:
        self._pending.clear()
