"""A private, throwaway Redis Cluster (or Valkey cluster) on free loopback ports, for the
tests and the chaos run (a developer tool: not in the wheel).

Each node is a :class:`LocalRedis` started with ``--cluster-enabled yes`` in its own temp
dir. The cluster is formed with plain commands (``CLUSTER ADDSLOTSRANGE``, ``MEET``,
``REPLICATE``), so it needs no ``redis-cli`` and works the same with Valkey's server; the
slot ranges are the ones ``redis-cli --cluster create`` assigns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster

from workers.tools.localredis import LocalRedis, free_port

SLOTS = 16384


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slot range of each master, as ``redis-cli --cluster create`` computes them."""
    per_node = SLOTS / masters
    ranges, first, cursor = [], 0, 0.0
    for i in range(masters):
        last = round(cursor + per_node - 1)
        if last > SLOTS - 1 or i == masters - 1:
            last = SLOTS - 1
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per_node
    return ranges


def _cmd(admin: redis.Redis, *args: object) -> Any:
    return admin.execute_command(*args)  # type: ignore[no-untyped-call]


class LocalCluster:
    """``with LocalCluster(masters=3) as cluster: cluster.client()`` (a RedisCluster)."""

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 15000,
        binary: str | None = None,
        appendonly: bool = False,
    ) -> None:
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
            # a lone master whose replica was promoted must not block the rest
            "--cluster-require-full-coverage",
            "no",
        ]
        # the bus port is a free port (maybe above 55535): give the cluster bus its own
        self.bus_ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.nodes = [
            LocalRedis(
                binary=binary,
                extra_args=[*args, "--cluster-port", str(bus_port)],
                appendonly=appendonly,
            )
            for bus_port in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """A seed node's URL (``--redis-url`` with ``--redis-cluster``)."""
        return self.nodes[0].url

    def client(self, **kwargs: object) -> RedisCluster:
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        return RedisCluster(host="127.0.0.1", port=live.port, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        for node in self.nodes:
            node.start()
        admins = [n.client(decode_responses=True) for n in self.nodes]
        try:
            ids = [_cmd(a, "CLUSTER", "MYID") for a in admins]
            for i, (lo, hi) in enumerate(slot_ranges(self.masters)):
                _cmd(admins[i], "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                _cmd(admins[i], "CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                _cmd(admins[0], "CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            self._wait(lambda: all(self._known(a) == len(self.nodes) for a in admins), timeout_s)
            for r in range(self.replicas):
                for m in range(self.masters):
                    replica = admins[self.masters * (1 + r) + m]
                    master_id = ids[m]
                    self._wait(lambda: self._knows_master(replica, master_id), timeout_s)  # noqa: B023
                    _cmd(replica, "CLUSTER", "REPLICATE", ids[m])
            self._wait(lambda: all(self._ok(a) for a in admins), timeout_s)
        finally:
            for a in admins:
                a.close()
        return self

    @staticmethod
    def _known(admin: redis.Redis) -> int:
        return len(str(_cmd(admin, "CLUSTER", "NODES")).strip().splitlines())

    @staticmethod
    def _knows_master(admin: redis.Redis, master_id: str) -> bool:
        return master_id in str(_cmd(admin, "CLUSTER", "NODES"))

    def _ok(self, admin: redis.Redis) -> bool:
        info = str(_cmd(admin, "CLUSTER", "INFO"))
        if "cluster_state:ok" not in info:
            return False
        role = _cmd(admin, "ROLE")
        return bool(role[0] == "master" or role[3] == "connected")

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster did not settle within {timeout_s}s")
            time.sleep(0.05)

    def master_of(self, key: str) -> LocalRedis:
        """The node that serves ``key``'s slot now (asked of a live node)."""
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        admin = live.client(decode_responses=True)
        try:
            slot = int(_cmd(admin, "CLUSTER", "KEYSLOT", key))
            for lo, hi, master, *_ in _cmd(admin, "CLUSTER", "SLOTS"):
                if lo <= slot <= hi:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        finally:
            admin.close()
        raise LookupError(f"no node serves slot of {key!r}")

    def node_id(self, node: LocalRedis) -> str:
        admin = node.client(decode_responses=True)
        try:
            return str(_cmd(admin, "CLUSTER", "MYID"))
        finally:
            admin.close()

    def migrate_slot_of(self, key: str, target: LocalRedis, batch: int = 10) -> int:
        """Move ``key``'s slot to master ``target`` the way ``redis-cli --cluster reshard``
        does (SETSLOT IMPORTING / MIGRATING, MIGRATE the keys, SETSLOT NODE), so clients
        meet ASK and then MOVED. Returns the number of keys moved."""
        source = self.master_of(key)
        src, dst = source.client(decode_responses=True), target.client(decode_responses=True)
        try:
            slot = int(_cmd(src, "CLUSTER", "KEYSLOT", key))
            src_id, dst_id = self.node_id(source), self.node_id(target)
            _cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            _cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            moved = 0
            while keys := _cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, batch):
                _cmd(src, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            for admin in (dst, src):
                _cmd(admin, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        finally:
            src.close()
            dst.close()
        return moved

    def _every_live_node(self, check: Callable[[redis.Redis], bool]) -> bool:
        """True when ``check`` holds on every node that runs (one that does not answer:
        False)."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            admin = node.client(decode_responses=True, socket_timeout=1)
            try:
                if not check(admin):
                    return False
            except redis.RedisError:
                return False
            finally:
                admin.close()
        return True

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok``."""
        self._wait(
            lambda: self._every_live_node(
                lambda admin: "cluster_state:ok" in str(_cmd(admin, "CLUSTER", "INFO"))
            ),
            timeout_s,
        )

    def wait_replicas_synced(self, timeout_s: float = 30.0) -> None:
        """Until every live replica has its link to its master up."""

        def synced(admin: redis.Redis) -> bool:
            role = _cmd(admin, "ROLE")
            return bool(role[0] == "master" or role[3] == "connected")

        self._wait(lambda: self._every_live_node(synced), timeout_s)

    def flushall(self) -> None:
        for node in self.nodes:
            admin = node.client()
            try:
                if _cmd(admin, "ROLE")[0] in (b"master", "master"):
                    admin.flushall()
            finally:
                admin.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
