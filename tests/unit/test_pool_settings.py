"""Pool settings: flags, env twins, env files, precedence and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.pool.settings import OPTIONS, SettingsError, parse_settings, read_env_file

REQUIRED = {
    "EVENTBUS_TENANT": "acme",
    "EVENTBUS_STREAM": "tasks",
    "EVENTBUS_GROUP": "writers",
    "EVENTBUS_HANDLER": "pkg.mod:handle",
}


def test_every_flag_has_an_env_twin_with_the_eventbus_prefix() -> None:
    for opt in OPTIONS:
        assert opt.env_name.startswith("EVENTBUS_")
        assert opt.flag.startswith("--")


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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVENTBUS_PROCESSES", "0"),
        ("EVENTBUS_PROCESSES", "two"),
        ("EVENTBUS_RETRY_DELAYS", "1,x"),
        ("EVENTBUS_HANDLER_TIMEOUT_S", "nan"),
        ("EVENTBUS_GROUP", "a b"),
        ("EVENTBUS_HANDLER", "no_colon"),
        ("EVENTBUS_LOG_FORMAT", "xml"),
        ("EVENTBUS_CONSUMER_HOSTNAME", "maybe"),
    ],
)
def test_bad_value_is_refused_naming_the_setting_and_the_value(key: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([], {**REQUIRED, key: value})
    assert key in str(err.value)
    assert repr(value) in str(err.value)


def test_missing_required_setting_names_flag_and_env() -> None:
    env = dict(REQUIRED)
    del env["EVENTBUS_STREAM"]
    with pytest.raises(SettingsError, match="--stream / EVENTBUS_STREAM is required"):
        parse_settings([], env)


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
