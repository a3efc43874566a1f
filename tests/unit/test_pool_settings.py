"""Pool settings: one declaration behind flags, env twins, env files, --help and the README;
precedence and clear refusals."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from eventbus.retry import RETRY_DELAYS
from eventbus.settings import BusSettings, ConsumerSettings
from tests.conftest import SERVER_ENV
from workers.cli.main import main as eventbus_main
from workers.console.settings import ENV_NAMES as CONSOLE_ENV_NAMES
from workers.pool import supervisor
from workers.pool.flags import build_parser, parse_settings
from workers.pool.settings import OPTIONS, Option, SettingsError, read_env_file
from workers.pool.sources import Source, build, environment

ROOT = Path(__file__).parents[2]
REQUIRED = {
    "EVENTBUS_TENANT": "acme",
    "EVENTBUS_STREAM": "tasks",
    "EVENTBUS_GROUP": "writers",
    "EVENTBUS_HANDLER": "pkg.mod:handle",
}


def _words(text: str) -> str:
    return " ".join(text.split())  # argparse wraps help lines anywhere


# -- the declaration -------------------------------------------------------------------------


def test_every_flag_has_an_env_twin_with_the_eventbus_prefix() -> None:
    for opt in OPTIONS:
        assert opt.env_name.startswith("EVENTBUS_")
        assert opt.flag.startswith("--")
    assert len({o.env_name for o in OPTIONS}) == len({o.flag for o in OPTIONS}) == len(OPTIONS)


def test_irregular_env_twins_are_kept() -> None:
    twins = {o.flag: o.env_name for o in OPTIONS}
    assert twins["--pool-name"] == "EVENTBUS_POOL"
    assert twins["--hostname-in-names"] == "EVENTBUS_CONSUMER_HOSTNAME"
    assert twins["--env-file"] == "EVENTBUS_ENV_FILE"


def test_the_default_shown_is_the_default_used() -> None:
    for opt in OPTIONS:
        if not opt.required:
            shown = "" if opt.default_text == "unset" else opt.default_text
            assert opt.parse(shown) == opt.default, opt.name


def test_library_defaults_come_from_the_library() -> None:
    s = parse_settings([], REQUIRED)
    assert s.consumer_settings() == ConsumerSettings()
    assert s.bus_settings() == BusSettings()
    assert s.retry_delays == RETRY_DELAYS


def test_help_lists_every_flag_with_its_env_twin_and_default() -> None:
    text = _words(build_parser("eventbus-supervisor").format_help())
    for opt in OPTIONS:
        tail = "required" if opt.required else f"default {opt.default_text}"
        assert f"{opt.flag} {opt.metavar} " in text
        assert f"[env {opt.env_name}; {tail}]" in text, opt.name


def _readme_table() -> str:
    def default(opt: Option) -> str:
        text = opt.default_text
        return text if text in ("required", "unset") else f"`{text}`"

    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{o.flag}` | `{o.env_name}` | {default(o)} | {o.help} |" for o in OPTIONS]
    return "\n".join(rows) + "\n"


def test_readme_table_matches_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _readme_table() in readme, "README.md's settings table should read:\n" + _readme_table()
    mentioned = set(re.findall(r"EVENTBUS_[A-Z_]+", readme))
    test_switches = {SERVER_ENV}  # which server the test suite runs on (tests/conftest.py)
    assert mentioned <= {o.env_name for o in OPTIONS} | set(CONSOLE_ENV_NAMES) | test_switches, (
        "README names variables that are not settings"
    )


def test_example_env_file_configures_a_pool() -> None:
    path = ROOT / "systemd" / "example.env"
    declared = {o.env_name for o in OPTIONS}
    assert set(read_env_file(str(path))) <= declared
    s = parse_settings(["--env-file", str(path)], {})
    assert s.env_file == str(path) and s.tenant == "acme"


# -- sources and precedence ------------------------------------------------------------------


def test_env_alone_configures_a_pool_with_sensible_defaults() -> None:
    s = parse_settings([], REQUIRED)
    assert (s.tenant, s.stream, s.group, s.handler) == (
        "acme",
        "tasks",
        "writers",
        "pkg.mod:handle",
    )
    assert s.retry_delays == (1.0, 4.0, 16.0)
    assert s.retry_policy().delays() == [1.0, 4.0, 16.0]
    assert s.handler_timeout_s == 0
    assert s.consumer_name(3) == "writers-3"


def test_flag_beats_env_file_beats_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "pool.env"
    env_file.write_text("# comment\nEVENTBUS_PROCESSES=3\nEVENTBUS_RETRY_DELAYS='0.5,2'\n")
    s = parse_settings(["--env-file", str(env_file)], {**REQUIRED, "EVENTBUS_PROCESSES": "9"})
    assert s.processes == 3
    assert s.retry_delays == (0.5, 2.0)
    s = parse_settings(["--env-file", str(env_file), "--processes", "5"], REQUIRED)
    assert s.processes == 5


def test_env_file_named_in_the_environment_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "pool.env"
    env_file.write_text('; systemd comment\nEVENTBUS_GROUP="readers"\n')
    s = parse_settings([], {**REQUIRED, "EVENTBUS_ENV_FILE": str(env_file)})
    assert (s.group, s.env_file) == ("readers", str(env_file))
    assert parse_settings([], {**REQUIRED, "EVENTBUS_ENV_FILE": ""}).env_file is None


def test_env_file_refuses_unknown_eventbus_names_and_ignores_other_variables(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "pool.env"
    env_file.write_text("EVENTBUS_PROCESS=4\nOPENAI_API_KEY=x\n")
    with pytest.raises(SettingsError, match="unknown setting.*EVENTBUS_PROCESS"):
        parse_settings(["--env-file", str(env_file)], REQUIRED)
    env_file.write_text("OPENAI_API_KEY=x\n")
    assert parse_settings(["--env-file", str(env_file)], REQUIRED).processes == 2


def test_a_named_mapping_feeds_the_same_declaration() -> None:
    """How a config file will plug in: typed values, read by the same parsers."""
    config = Source("config file pool.toml", {"processes": 4, "retry_delays": [0.5, 2]})
    s = build([config, environment(REQUIRED)])
    assert (s.processes, s.retry_delays) == (4, (0.5, 2.0))
    with pytest.raises(SettingsError, match=r"--processes / EVENTBUS_PROCESSES \(from config"):
        build([Source("config file pool.toml", {"processes": 0}), environment(REQUIRED)])
    with pytest.raises(SettingsError, match="unknown setting.*prosesses.*config file pool.toml"):
        build([Source("config file pool.toml", {"prosesses": 4}), environment(REQUIRED)])


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTBUS_PROCESSES", "0"),
        ("EVENTBUS_PROCESSES", "two"),
        ("EVENTBUS_RETRY_DELAYS", "1,x"),
        ("EVENTBUS_RETRY_DELAYS", "1,inf"),
        ("EVENTBUS_RETRY_DELAYS", ","),
        ("EVENTBUS_HANDLER_TIMEOUT_S", "nan"),
        ("EVENTBUS_GROUP", "a b"),
        ("EVENTBUS_POOL", "a:b"),
        ("EVENTBUS_HANDLER", "no_colon"),
        ("EVENTBUS_LOG_FORMAT", "xml"),
        ("EVENTBUS_CONSUMER_HOSTNAME", "maybe"),
        ("EVENTBUS_MAX_RETRIES", "-1"),
    ],
)
def test_bad_value_is_refused_naming_the_setting_and_the_value(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([], {**REQUIRED, key: value})
    flag = next(o.flag for o in OPTIONS if o.env_name == key)
    assert f"{flag} / {key}" in str(err.value)
    assert repr(value) in str(err.value)
    assert "(from the environment)" in str(err.value)


def test_bad_flag_value_says_it_came_from_the_command_line() -> None:
    with pytest.raises(SettingsError, match=r"'x' for --block-ms .*command line"):
        parse_settings(["--block-ms", "x"], REQUIRED)


def test_missing_required_setting_names_flag_and_env() -> None:
    env = dict(REQUIRED)
    del env["EVENTBUS_STREAM"]
    with pytest.raises(SettingsError, match="--stream / EVENTBUS_STREAM is required"):
        parse_settings([], env)


def test_too_long_consumer_names_are_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="--pool-name / EVENTBUS_POOL"):
        parse_settings(["--pool-name", "p" * 63], REQUIRED)


def test_hostname_goes_into_consumer_names_when_asked() -> None:
    s = parse_settings([], {**REQUIRED, "EVENTBUS_CONSUMER_HOSTNAME": "yes"})
    name = s.consumer_name(0)
    assert name.endswith("-writers-0") and name != "writers-0"


def test_env_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("EVENTBUS_PROCESSES=2\nthis is not an assignment\n")
    with pytest.raises(SettingsError, match="line 2"):
        read_env_file(str(env_file))
    with pytest.raises(SettingsError, match="missing.env"):
        read_env_file(str(tmp_path / "missing.env"))


# -- entry points ----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for opt in OPTIONS:
        monkeypatch.delenv(opt.env_name, raising=False)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("entry", "usage"),
    [
        (lambda: supervisor.main(["--help"]), "usage: eventbus-supervisor "),
        (lambda: eventbus_main(["supervise", "--help"]), "usage: eventbus supervise "),
    ],
)
def test_each_entry_point_shows_its_own_name(
    entry: Callable[[], object], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


@pytest.mark.usefixtures("clean_env")
def test_bad_setting_stops_the_supervisor_with_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--tenant", "acme", "--stream", "s", "--group", "g", "--handler", "a:b"]
    assert eventbus_main(["supervise", *argv, "--processes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eventbus supervise: error: bad value '0' for --processes / ")
    assert err.count("\n") == 1
    assert supervisor.main(argv[2:]) == 2
    err = capsys.readouterr().err
    assert err == (
        "eventbus-supervisor: error: --tenant / EVENTBUS_TENANT is required (tenant id)\n"
    )


def test_agent_guard_limits_reach_the_pools_bus_settings() -> None:
    default = parse_settings([], REQUIRED).bus_settings()
    assert (default.max_hops, default.max_visits, default.budget_events) == (32, 2, 0)
    assert default.trace is False
    env = {**REQUIRED, "EVENTBUS_MAX_HOPS": "8", "EVENTBUS_BUDGET_UNITS": "2.5"}
    s = parse_settings(["--max-visits", "3", "--budget-events", "500", "--trace", "true"], env)
    bus = s.bus_settings()
    assert (bus.max_hops, bus.max_visits, bus.budget_events, bus.budget_units) == (8, 3, 500, 2.5)
    assert bus.trace is True
    with pytest.raises(SettingsError, match="EVENTBUS_MAX_HOPS"):
        parse_settings([], {**REQUIRED, "EVENTBUS_MAX_HOPS": "-1"})


def test_request_ttl_and_the_metrics_tenant_cap_are_ordinary_settings() -> None:
    default = parse_settings([], REQUIRED)
    assert default.bus_settings().request_ttl_s == BusSettings().request_ttl_s
    assert default.metrics_max_tenants == 100
    config = Source("config file pool.toml", {"request_ttl_s": 3600, "metrics_max_tenants": 0})
    s = build([config, environment(REQUIRED)])
    assert (s.bus_settings().request_ttl_s, s.metrics_max_tenants) == (3600.0, 0)
    env = {**REQUIRED, "EVENTBUS_REQUEST_TTL_S": "0.5"}
    with pytest.raises(SettingsError, match=r"'0.5' for --request-ttl-s / EVENTBUS_REQUEST_TTL_S"):
        parse_settings([], env)
    with pytest.raises(SettingsError, match="--metrics-max-tenants"):
        parse_settings(["--metrics-max-tenants", "-1"], REQUIRED)
