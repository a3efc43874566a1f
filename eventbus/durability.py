"""The durability knob of publish (``min_replicas``): after the write, WAIT until that
many replicas have it, or say clearly that the write may be lost (:class:`ReplicationTimeout`).
"""

from __future__ import annotations

from redis.cluster import RedisCluster

from eventbus.errors import BusConnectionError, ReplicationTimeout
from eventbus.redis_io import AnyRedis, max_block_ms, translated


def wait_for_replicas(
    client: AnyRedis, key: str, ttl_ms: int, replicas: int, timeout_ms: int
) -> int:
    """How many replicas have the writes made so far on ``key``'s master, waiting up to
    ``timeout_ms`` for ``replicas`` of them (``WAIT``); -1 if ``key`` does not exist there.

    WAIT counts up to the last write *of its own connection*, and a pooled client may send
    it on another one; so a PEXPIRE of ``key`` (an existing key of the slot just written,
    whose TTL is set to ``ttl_ms``) goes first on the same connection, in one pipeline. Its
    replication offset is past the earlier writes to that master, so WAIT covers them. A
    key gone (a failover to a replica that never got it) answers -1: the write is lost.
    """
    pipe = client.pipeline(transaction=False)
    pipe.pexpire(key, ttl_ms)
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
    else:
        pipe.execute_command("WAIT", replicas, timeout_ms)
    existed, acked = pipe.execute()
    return int(acked) if existed else -1


def ensure_replicated(
    client: AnyRedis,
    stream: str,
    marker: str,
    message_ids: list[str],
    wanted: int,
    timeout_ms: int,
    *,
    ttl_ms: int,
) -> None:
    """Return once ``wanted`` replicas have the publish whose last dedupe marker is
    ``marker``; else raise :class:`ReplicationTimeout` (a lost connection counts as 0)."""
    timeout_ms = max_block_ms(client, timeout_ms)  # the reply comes before the socket timeout
    try:
        with translated(f"wait for {wanted} replica(s) of {stream!r}"):
            acked = wait_for_replicas(client, marker, ttl_ms, wanted, timeout_ms)
    except BusConnectionError as exc:  # the master may be gone: so may the write
        raise ReplicationTimeout(stream, message_ids, 0, wanted, timeout_ms) from exc
    if acked < wanted:
        raise ReplicationTimeout(stream, message_ids, max(acked, 0), wanted, timeout_ms)
