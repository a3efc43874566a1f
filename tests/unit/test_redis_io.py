"""Error translation at the boundary to Redis (no server): replies a cluster and its
failovers produce are transient, also when they come back from a pipeline."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import RedisClusterException

from eventbus.errors import BusConnectionError, GroupMissing, ScriptError
from eventbus.redis_io import call_with_retries, transient, translate

PIPED = "Command # 2 (XREADGROUP GROUP g c STREAMS k >) of pipeline caused error: "


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        # a blocked read whose stream moved away (slot migration) or was deleted
        (redis.ResponseError("UNBLOCKED the stream key no longer exists"), BusConnectionError),
        (
            redis.ResponseError(PIPED + "UNBLOCKED the stream key no longer exists"),
            BusConnectionError,
        ),
        (
            redis.ResponseError(PIPED + "TRYAGAIN Multiple keys request during rehashing"),
            BusConnectionError,
        ),
        (redis.ResponseError(PIPED + "NOGROUP No such key 'k'"), GroupMissing),
        (RedisClusterException("Redis Cluster cannot be connected"), BusConnectionError),
        (redis.ResponseError(PIPED + "ERR wrong number of arguments"), ScriptError),
        # raised by the client before sending: a command over several slots is a bug
        (
            RedisClusterException("XREADGROUP - all keys must map to the same key slot"),
            ScriptError,
        ),
    ],
)
def test_cluster_and_pipeline_errors_are_classified_by_their_reply(
    exc: Exception, kind: type[Exception]
) -> None:
    translated = translate(exc, "read")  # type: ignore[arg-type]

    assert type(translated) is kind
    assert "read" in str(translated)


def test_a_command_over_several_slots_is_not_tried_again_as_an_outage() -> None:
    calls: list[int] = []
    mixed = RedisClusterException("XREADGROUP - all keys must map to the same key slot")

    def read() -> None:
        calls.append(1)
        raise mixed

    with pytest.raises(RedisClusterException):
        call_with_retries(read, budget_s=5.0)
    assert calls == [1] and not transient(mixed)
    assert transient(RedisClusterException("Redis Cluster cannot be connected"))
