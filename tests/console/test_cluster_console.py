"""``eventbus web --redis-cluster`` on a private Redis Cluster: operators log in with the
tenant ACL users (set on every node), see the overview, open a DLQ and replay a letter;
refusals say the same as on one node."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from eventbus import DeadLetterQueue, TenantEventBus
from eventbus.acl import tenant_users
from eventbus.redis_io import bus_client, disconnect
from tests.console.conftest import start_console, stop_console, user
from tests.console.test_server import Http
from tests.integration.helpers import make_event
from workers.console.sessions import LoginFailed, check_login
from workers.tools.localcluster import LocalCluster
from workers.tools.localredis import free_port


@pytest.fixture
def cluster_admin(cluster_server: LocalCluster) -> Iterator[RedisCluster]:
    """A flushed cluster with the ACL users of acme on every node (ACLs are per node)."""
    cluster_server.flushall()
    admin = cluster_server.client()
    users = tenant_users(
        "acme",
        worker_password=user("acme", "worker")[1],
        publisher_password=user("acme", "publisher")[1],
        viewer_password=user("acme", "viewer")[1],
    )
    for u in users:
        admin.execute_command("ACL", "SETUSER", *u.setuser_args(), target_nodes=admin.ALL_NODES)
    yield admin
    for u in users:
        admin.execute_command("ACL", "DELUSER", u.username, target_nodes=admin.ALL_NODES)
    admin.close()


@pytest.mark.slow  # the cluster's start (~2 s, once per run) and a console process
def test_a_worker_logs_in_sees_the_overview_and_replays_a_letter_on_a_cluster(
    cluster_server: LocalCluster, cluster_admin: RedisCluster, console_tmp: Path
) -> None:
    bus = TenantEventBus(cluster_admin, "acme")
    bus.publish("jobs", make_event())
    dlq = DeadLetterQueue(cluster_admin, "acme")
    dlq_id = dlq.send_to_dlq("jobs", "1-1", make_event(), "boom", 3, reason="handler_failed")
    console = start_console(cluster_server, console_tmp, "--redis-cluster")
    try:
        client = Http(console)
        name, password = user("acme", "worker")
        status, page = client.login(name, "wrong", "acme")
        assert status == 401 and "invalid username or password" in page
        status, page = client.login(name, password, "globex")
        assert status == 401 and "no access to tenant &#39;globex&#39;" in page
        assert client.login(name, password, "acme")[0] == 303
        assert client.headers["location"] == "/t/acme/"
        status, page = client.send("GET", "/t/acme/")
        assert status == 200 and "jobs" in page
        status, page = client.send("GET", "/t/acme/s/jobs/dlq")
        assert status == 200 and dlq_id in page and "boom" in page
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        form = {"csrf": token.group(1), "op": "replay:one", "id": dlq_id, "confirmed": "yes"}
        assert client.send("POST", "/t/acme/s/jobs/dlq/action", form)[0] == 303
        assert dlq.count("jobs") == 0 and cluster_admin.xlen(bus.keys.stream("jobs")) == 2
        assert "Replayed 1 dead letter" in client.send("GET", client.headers["location"])[1]
    finally:
        stop_console(console)


@pytest.mark.slow  # the cluster's start (~2 s, once per run)
def test_cluster_login_refusals_name_the_cause(
    cluster_server: LocalCluster, cluster_admin: RedisCluster
) -> None:
    name, password = user("acme", "viewer")
    cases = {
        (cluster_server.url, name, "wrong", "acme"): "invalid username or password",
        (cluster_server.url, "nobody", "pw", "acme"): "invalid username or password",
        (cluster_server.url, name, password, "globex"): (
            "no access to tenant 'globex' for user 'eventbus-acme-viewer'"
        ),
        (f"redis://127.0.0.1:{free_port()}/0", name, password, "acme"): (
            "cannot reach Redis; try again later"
        ),
    }
    for args, message in cases.items():
        with pytest.raises(LoginFailed) as refused:
            check_login(*args, cluster=True)
        assert str(refused.value) == message, args
    # a user that may not read the slot map (no CLUSTER SLOTS): said, not "cannot reach"
    cluster_admin.execute_command(
        "ACL", "SETUSER", "bare", "on", ">pw", "+ping", target_nodes=cluster_admin.ALL_NODES
    )
    try:
        with pytest.raises(LoginFailed, match="may not read the cluster's slot map"):
            check_login(cluster_server.url, "bare", "pw", "acme", cluster=True)
    finally:
        cluster_admin.execute_command(
            "ACL", "DELUSER", "bare", target_nodes=cluster_admin.ALL_NODES
        )
    # the client a login returns is still usable (not closed): a session builds on it
    client = check_login(cluster_server.url, name, password, "acme", cluster=True)
    try:
        assert TenantEventBus(client, "acme").streams() == []  # flushed: none yet
    finally:
        disconnect(bus_client(client))
        disconnect(client)
