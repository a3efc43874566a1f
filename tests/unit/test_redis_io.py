"""Error translation at the boundary to Redis (no server): replies a cluster and its
failovers produce are transient, also when they come back from a pipeline."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import RedisClusterException

from eventbus.errors import BusConnectionError, GroupMissing, ScriptError
from eventbus.redis_io import translate

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
    ],
)
def test_cluster_and_pipeline_errors_are_classified_by_their_reply(
    exc: Exception, kind: type[Exception]
) -> None:
    translated = translate(exc, "read")  # type: ignore[arg-type]

    assert type(translated) is kind
    assert "read" in str(translated)
