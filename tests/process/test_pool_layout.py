"""The supervisor says so when its tenant still has key layout 1 keys (never silent)."""

from __future__ import annotations

from collections.abc import Callable

import redis

from tests.conftest import wait_for
from tests.process.pool import STREAM, TENANT, Pool


def test_the_supervisor_warns_about_layout_1_keys_of_its_tenant(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    r.xadd(f"t:{TENANT}:events:{STREAM}", {"x": "1"})  # a layout-1 stream (no hash tag)
    pool = make_pool(processes=1).start()

    wait_for(lambda: pool.logged("legacy_keys_found"), 30)
    assert pool.stop() == 0
    (line,) = pool.logged("legacy_keys_found")
    assert line["example"] == f"t:{TENANT}:events:{STREAM}"
    assert line["fix"] == f"eventbus migrate-keys --tenant {TENANT}"
