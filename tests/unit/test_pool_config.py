"""The pool's config file (--config / EVENTBUS_CONFIG): settings at the top, one
[[subscription]] table per subscription; the four flags stay the shorthand for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from workers.pool import supervisor
from workers.pool.config import Subscription
from workers.pool.flags import parse_settings
from workers.pool.settings import OPTIONS, SettingsError

GOOD = """
processes = 3
redis-url = "redis://127.0.0.1:7777/0"
retry_delays = [0.5, 2]

[[subscription]]
tenant = "*"
stream = "tasks"
group = "writers"
handler = "pkg.mod:write"
weight = 2
max_in_flight = 4

[[subscription]]
tenant = "acme"
stream = "reviews"
group = "reviewers"
handler = "pkg.mod:review"
"""


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for opt in OPTIONS:
        monkeypatch.delenv(opt.env_name, raising=False)


def test_settings_and_subscriptions_come_from_the_file(tmp_path: Path) -> None:
    s = parse_settings(["--config", _config(tmp_path, GOOD)], {})
    assert (s.processes, s.redis_url, s.retry_delays) == (3, "redis://127.0.0.1:7777/0", (0.5, 2))
    assert s.subscriptions == (
        Subscription("*", "tasks", "writers", "pkg.mod:write", 2.0, 4),
        Subscription("acme", "reviews", "reviewers", "pkg.mod:review", 1.0, None),
    )
    assert s.subscriptions[0].every_tenant and not s.subscriptions[1].every_tenant
    assert s.consumer_name(0) == "pool-0"


def test_flags_and_environment_beat_the_file(tmp_path: Path) -> None:
    path = _config(tmp_path, GOOD)
    s = parse_settings(["--processes", "5"], {"EVENTBUS_CONFIG": path, "EVENTBUS_BLOCK_MS": "7"})
    assert (s.processes, s.block_ms) == (5, 7)
    assert len(s.subscriptions) == 2


def test_the_four_flags_are_the_shorthand_for_one_subscription() -> None:
    argv = ["--tenant", "acme", "--stream", "tasks", "--group", "writers", "--handler", "a:b"]
    s = parse_settings(argv, {})
    assert s.subscriptions == (Subscription("acme", "tasks", "writers", "a:b"),)
    assert s.consumer_name(1) == "writers-1"


def test_a_file_without_tables_takes_the_four_settings_from_anywhere(tmp_path: Path) -> None:
    path = _config(tmp_path, 'tenant = "acme"\nstream = "tasks"\ngroup = "g"\nhandler = "a:b"\n')
    s = parse_settings(["--config", path], {})
    assert s.subscriptions == (Subscription("acme", "tasks", "g", "a:b"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("processes = 0\n", "bad value 0 for --processes / EVENTBUS_PROCESSES (from config"),
        ("prosesses = 2\n", "unknown setting(s) prosesses"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_settings_in_the_file_are_refused_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _config(tmp_path, text)
    argv = ["--config", path, "--tenant", "t", "--stream", "s", "--group", "g", "--handler", "a:b"]
    with pytest.raises(SettingsError) as err:
        parse_settings(argv, {})
    assert message in str(err.value)
    assert path in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[subscription]]\ntenant = 'a'\n", "subscription 1: missing stream, group, handler"),
        (
            "[[subscription]]\ntenant='bad tenant!'\nstream='s'\ngroup='g'\nhandler='a:b'\n",
            "subscription 1: bad value 'bad tenant!' for tenant",
        ),
        (
            "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='nocolon'\n",
            "bad value 'nocolon' for handler",
        ),
        (
            "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='a:b'\nweight=0\n",
            "bad value 0 for weight: must be a number > 0",
        ),
        (
            "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='a:b'\nmax_in_flight=0\n",
            "bad value 0 for max_in_flight",
        ),
        (
            "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='a:b'\ncolour=1\n",
            "unknown key(s) colour",
        ),
        (
            "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='a:b'\n" * 2,
            "subscription a/s/g is listed twice",
        ),
        ("subscription = 3\n", "must be [[subscription]] tables"),
    ],
)
def test_bad_subscription_tables_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        parse_settings(["--config", path], {})
    assert f"config {path}" in str(err.value)
    assert message in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config .*missing.toml"):
        parse_settings(["--config", str(tmp_path / "missing.toml")], {})


def test_single_subscription_flags_and_tables_together_are_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, GOOD)
    with pytest.raises(SettingsError, match="--tenant / EVENTBUS_TENANT given with"):
        parse_settings(["--config", path], {"EVENTBUS_TENANT": "acme"})


def test_a_bad_config_stops_the_supervisor_with_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, "[[subscription]]\ntenant='a'\nstream='s'\ngroup='g'\nhandler='x'\n")
    assert supervisor.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eventbus-supervisor: error: config {path}, subscription 1: ")
    assert err.count("\n") == 1


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """main() configures structlog to write to this test's captured stderr: put it back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("keep_logging")
def test_a_handler_that_cannot_be_imported_stops_the_supervisor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(
        tmp_path,
        GOOD.replace("pkg.mod:review", "workers.examples:writer_agent").replace(
            "pkg.mod:write", "no_such_module_xyz:handle"
        ),
    )
    assert supervisor.main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert "no_such_module_xyz" in err and err.count("\n") == 1


def test_a_platform_pool_takes_metrics_settings(tmp_path: Path) -> None:
    args = ["--config", _config(tmp_path, GOOD), "--metrics-port", "9100"]
    s = parse_settings([*args, "--metrics-max-tenants", "5"], {})
    assert (s.metrics_port, s.metrics_max_tenants, len(s.subscriptions)) == (9100, 5, 2)


def test_the_shipped_platform_example_is_a_valid_config() -> None:
    path = Path(__file__).parents[2] / "systemd" / "platform.toml"
    s = parse_settings(["--config", str(path)], {})
    assert [sub.tenant for sub in s.subscriptions] == ["*", "acme"]
    assert s.subscriptions[1].max_in_flight == 2 and s.processes == 4


def test_a_tenant_table_sets_that_tenants_agent_guards_over_the_pools(tmp_path: Path) -> None:
    text = (
        "max_hops = 10\nbudget_events = 50\n"
        + GOOD
        + (
            "\n[tenants.acme]\nmax_hops = 3\nmax-visits = 1\ntrace = true\n"
            "\n[tenants.globex]\nbudget_events = 0\n"
        )
    )
    s = parse_settings(["--config", _config(tmp_path, text)], {})
    acme, globex, other = (s.bus_settings(t) for t in ("acme", "globex", "initech"))
    assert (acme.max_hops, acme.max_visits, acme.trace, acme.budget_events) == (3, 1, True, 50)
    assert (globex.max_hops, globex.budget_events) == (10, 0)
    assert other == s.bus_settings() and (other.max_hops, other.budget_events) == (10, 50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tenants.acme]\nmax_hops = -1\n", "bad value -1 for max_hops in [tenants.acme]"),
        ("[tenants.acme]\nprocesses = 2\n", "[tenants.acme]: unknown key(s) processes"),
        ("[tenants.'bad tenant!']\nmax_hops = 2\n", "[tenants.bad tenant!]: invalid tenant id"),
        ("tenants = 3\n", "'tenants' must be [tenants.<id>] tables"),
    ],
)
def test_bad_tenant_tables_are_refused_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _config(tmp_path, text + GOOD if text.startswith("tenants =") else GOOD + text)
    with pytest.raises(SettingsError) as err:
        parse_settings(["--config", path], {})
    assert message in str(err.value) and path in str(err.value)
