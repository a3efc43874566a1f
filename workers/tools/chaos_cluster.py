"""The chaos run on a Redis Cluster (``scripts/chaos --cluster``): 3 masters + 3 replicas
(AOF, fsync always, cluster-node-timeout 1 s), the publisher with ``min_replicas=1``, and
among the faults SIGKILL of the master that holds the tenant's slot: a replica is
promoted, then the old master is restarted and rejoins as a replica of the new one.
"""

from __future__ import annotations

import os
import random
import signal
import time

from eventbus import BusSettings
from eventbus.keys import TenantKeys
from workers.tools.localcluster import LocalCluster

#: Fault kinds on a cluster (worker_kill and client_kill as on one node).
CLUSTER_KINDS = ("worker_kill", "master_kill", "client_kill")
NODE_TIMEOUT_MS = 1000  # failure detection: a promotion takes a few of these
#: What the publisher asks (README "Redis Cluster"): a publish returns once a replica has it.
PUBLISHER_SETTINGS = BusSettings(min_replicas=1, replica_timeout_ms=1000)


def new_cluster() -> LocalCluster:
    """3 masters + 3 replicas, AOF with fsync always (not started)."""
    return LocalCluster(masters=3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS, appendonly=True)


class ClusterFaults:
    """The fault actions of a cluster run (the caller records what it injected)."""

    def __init__(self, cluster: LocalCluster, tenant: str, stream: str, rng: random.Random):
        self.cluster, self.rng = cluster, rng
        self.key = TenantKeys(tenant).stream(stream)

    def master_kill(self) -> bool:
        """SIGKILL the tenant's master; wait for a replica to take over and the cluster to
        be ok; restart the old master (it rejoins as a replica) and wait for its sync."""
        victim = self.cluster.master_of(self.key)
        victim.kill()
        deadline = time.monotonic() + 60
        while self.cluster.master_of(self.key) is victim:
            if time.monotonic() > deadline:
                raise TimeoutError("no replica took over the killed master's slots")
            time.sleep(0.1)
        self.cluster.wait_ok(timeout_s=60)
        victim.start(timeout_s=60)  # its nodes.conf makes it a replica of the new master
        self.cluster.wait_replicas_synced(timeout_s=60)
        return True

    def client_kill(self) -> bool:
        master = self.cluster.master_of(self.key).client(socket_timeout=30)
        try:
            master.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
        finally:
            master.close()
        return True


def kill_one(pids: list[int], rng: random.Random) -> bool:
    if not pids:
        return False
    os.kill(rng.choice(pids), signal.SIGKILL)
    return True
