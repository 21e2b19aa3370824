"""Settings from the environment, and plugin selection."""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings, env_name
from stevedore_server.cli import main
from stevedore_server.plugins.manager import PluginSelection, PluginSource


def test_from_env_and_back() -> None:
    env = {"STEVEDORE_PORT": "9000", "STEVEDORE_STRICT": "yes", "STEVEDORE_DISABLE_PLUGINS": "a, b_c ,"}
    settings = Settings.load(env)
    assert (settings.port, settings.strict) == (9000, True)
    assert (settings.disable_plugins, settings.plugins) == (("a", "b_c"), None)
    assert Settings.load(settings.to_env()) == settings


def test_a_flag_beats_its_variable() -> None:
    assert Settings.load({"STEVEDORE_PORT": "9000"}, port=9100).port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STEVEDORE_PORT": "x"}, "setting port (STEVEDORE_PORT): 'x' is not an integer"),
        ({"STEVEDORE_STRICT": "maybe"}, "setting strict (STEVEDORE_STRICT): 'maybe' is not true or false"),
        ({"STEVEDORE_LOG_LEVEL": "loud"}, "setting log_level (STEVEDORE_LOG_LEVEL): 'loud' is not one of"),
        ({"STEVEDORE_PORT": "70000"}, "setting port (STEVEDORE_PORT): 70000 is not a TCP port"),
        ({"STEVEDORE_GRPC_PORT": "-1"}, "setting grpc_port (STEVEDORE_GRPC_PORT): -1 is not a TCP port"),
        (
            {"STEVEDORE_PORT": "9000", "STEVEDORE_GRPC_PORT": "9000"},
            "setting grpc_port (STEVEDORE_GRPC_PORT): 9000 is the HTTP port too",
        ),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(StartupError, match=re.escape(message)):
        Settings.load(env)


def source(entry_point: str, distribution: str | None) -> PluginSource:
    return PluginSource(entry_point=entry_point, distribution=distribution)


def test_selection_matches_entry_point_or_distribution_names() -> None:
    only = PluginSelection.from_names(["Stevedore_SKLearn.LogReg"])
    assert only.allows(source("iris", "stevedore-sklearn-logreg"))
    assert not only.allows(source("other", "other-dist"))
    disabled = PluginSelection.from_names(None, ["iris"])
    assert not disabled.allows(source("iris", "stevedore-sklearn-logreg"))
    assert disabled.allows(source("other", None))
    assert PluginSelection.from_names([]).allows(source("anything", None))  # empty means all


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "s.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\ntimeout = 5\n[models.iris]\nmax_batch_time = 0.01\n')
    settings = Settings.load({"STEVEDORE_CONFIG": str(config), "STEVEDORE_PORT": "9001"}, host="::1")
    assert (settings.port, settings.host, settings.timeout) == (9001, "::1", 5.0)
    assert settings.for_model("iris").max_batch_time == 0.01
    assert settings.for_model("other").max_batch_time is None
    assert Settings.load(settings.to_env()) == settings  # what the workers see


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 'x'", "setting port (in"),
        ("colour = 1", "setting colour (in"),
        ("[models.iris]\nmax_batch_size = 0", "table [models.iris]): 0 must be at least 1"),
        ("[models.iris]\ntimeout = true", "setting models.iris.timeout (in"),
        ("port = ", "is not valid TOML"),
        ("[models.iris]\nprocesses = 0", "table [models.iris]): 0 is not from 1 to 256"),
        ("[models.iris]\npython = ' '", "setting models.iris.python (in"),
        ("[models.iris]\nprocesses = 'two'", "setting models.iris.processes (in"),
    ],
)
def test_invalid_file_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "s.toml"
    config.write_text(text)
    with pytest.raises(StartupError, match=re.escape(message)):
        Settings.load({}, config=str(config))


@pytest.mark.parametrize(
    ("flags", "env", "file_port", "port"),
    [
        ({}, {"PORT": "8080"}, 9000, 8080),  # the platform's PORT beats the file
        ({}, {"PORT": "8080", "STEVEDORE_PORT": "8500"}, None, 8500),
        ({"port": 8600}, {"PORT": "8080", "STEVEDORE_PORT": "8500"}, None, 8600),
        ({}, {}, 9000, 9000),
        ({}, {}, None, 8000),
    ],
)
def test_the_port_comes_from_the_flag_then_stevedore_port_then_port(
    tmp_path: Path, flags: dict[str, int], env: dict[str, str], file_port: int | None, port: int
) -> None:
    if file_port is not None:
        (tmp_path / "s.toml").write_text(f"port = {file_port}\n")
        env = {**env, "STEVEDORE_CONFIG": str(tmp_path / "s.toml")}
    assert Settings.load(env, **flags).port == port


def test_a_bad_platform_port_names_the_variable() -> None:
    with pytest.raises(StartupError, match=re.escape("setting port (PORT): 'http' is not an integer")):
        Settings.load({"PORT": "http"})


def test_a_model_in_processes_runs_as_many_calls_as_processes_and_none_inline(tmp_path: Path) -> None:
    from stevedore_server import Predictor

    class Short(Predictor):
        name = "iris"
        inline = True

    config = tmp_path / "s.toml"
    config.write_text("max_concurrency = 3\n[models.iris]\nprocesses = 4\ninline_budget = 0.001\n")
    limits = Settings.load({}, config=str(config)).limits_for(Short())
    assert (limits.max_concurrency, limits.inline_budget) == (4, 0.0)
    config.write_text("[models.iris]\npython = '/opt/venvs/iris'\nmax_concurrency = 2\n")
    settings = Settings.load({}, config=str(config))
    assert settings.for_model("iris").worker_processes == 1 and settings.limits_for(Short()).max_concurrency == 2
    assert not settings.for_model("other").in_processes


#: One setting of each kind: (name, its flag's arguments, the flag's value, the variable's text and value, the
#: file's TOML and value, an invalid variable text, the default).
KINDS = {
    "integer": ("grpc_port", ["--grpc-port", "9101"], 9101, "9102", 9102, "9103", 9103, "x", 8081),
    "float": ("timeout", ["--timeout", "1.5"], 1.5, "2.5", 2.5, "3.5", 3.5, "soon", 60.0),
    "bool": ("console", ["--no-console"], False, "false", False, "false", False, "maybe", True),
    "list": ("cors_origins", ["--cors-origins", "https://a"], ["https://a"], "https://b", ["https://b"],
             '["https://c"]', ["https://c"], None, []),
    "path": ("state_dir", ["--state-dir", "/srv/flag"], "/srv/flag", "/srv/env", "/srv/env", '"/srv/file"',
             "/srv/file", None, None),
}  # fmt: skip


def effective(args: list[str], env: dict[str, str], config: Path | None) -> Any:
    """What ``stevedore-server config`` prints for these flags, variables and file: the settings, or the error."""
    environment: dict[str, str | None] = {name: None for name in os.environ if name.startswith("STEVEDORE_")}
    environment |= {"PORT": None} | env | ({"STEVEDORE_CONFIG": str(config)} if config else {})
    result = CliRunner().invoke(main, ["config", *args], env=environment)
    return json.loads(result.output) if result.exit_code == 0 else result.output


@pytest.mark.parametrize("kind", KINDS)
def test_flag_then_variable_then_file_then_default_and_an_empty_variable_is_unset(kind: str, tmp_path: Path) -> None:
    name, flag, flag_value, env_text, env_value, file_text, file_value, invalid, default = KINDS[kind]
    variable = env_name(name)
    config = tmp_path / "s.toml"
    config.write_text(f"{name} = {file_text}\n")  # differs from the default: the file's win cannot be the default's
    assert effective([], {}, None)[name] == default
    assert effective([], {}, config)[name] == file_value
    assert effective([], {variable: env_text}, config)[name] == env_value
    assert effective(flag, {variable: env_text}, config)[name] == flag_value
    assert effective([], {variable: ""}, config)[name] == file_value
    assert effective([], {variable: "  "}, None)[name] == default
    if invalid is not None:  # an invalid variable stops the server, unless a flag is given: then it is not read
        assert f"{invalid!r} is not" in effective([], {variable: invalid}, None)
        assert effective(flag, {variable: invalid}, None)[name] == flag_value


def test_an_empty_variable_is_unset_for_every_setting() -> None:
    every = {env_name(item.name): "" for item in fields(Settings) if not item.metadata["file_only"]}
    assert Settings.load(every | {"PORT": ""}) == Settings()


def test_no_models_named_is_no_model_loaded_in_every_worker() -> None:
    settings = Settings.load({}, load_models=())
    assert settings.load_models == ("none",)
    assert Settings.load(settings.to_env()) == settings  # not "all", which an empty variable would give
