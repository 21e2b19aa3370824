"""The command line, in-process; the example plugin is installed (make test installs it)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stevedore_server.cli import RUN_SETTINGS, main
from stevedore_server.kit.scaffold import identifiers
from stevedore_server.testing import self_test

COMMANDS = ["run", "list", "check", "schema", "new-plugin", "config", "build", "manifests"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(runner: CliRunner, command: str) -> None:
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_run_documents_every_option_as_an_environment_variable(runner: CliRunner) -> None:
    text = runner.invoke(main, ["run", "--help"], terminal_width=200).output
    for name in RUN_SETTINGS:
        assert f"--{name.replace('_', '-')}" in text and f"STEVEDORE_{name.upper()}" in text
    assert "--api-keys" not in text  # secrets only from the environment or the file


def test_invalid_settings_name_the_setting(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "--workers", "0"])
    assert result.exit_code == 2 and "setting workers" in result.output
    result = runner.invoke(main, ["run"], env={"STEVEDORE_PORT": "eighty"})
    assert result.exit_code == 2 and "setting port (STEVEDORE_PORT): 'eighty' is not an integer" in result.output


def test_check_passes_on_the_example_plugin(runner: CliRunner) -> None:
    result = runner.invoke(main, ["check", "--plugins", "stevedore-sklearn-logreg"])
    assert result.exit_code == 0, result.output
    assert "iris 1" in result.output and "iris-proba 1" in result.output and "all 2 models passed" in result.output


def test_list_json(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list", "--json", "--plugins", "stevedore-sklearn-logreg"])
    report = json.loads(result.output)
    assert [(m["name"], m["state"]) for m in report["models"]] == [("iris", "ready"), ("iris-proba", "ready")]
    assert report["models"][0]["distribution"] == "stevedore-sklearn-logreg"


def test_list_table(runner: CliRunner) -> None:
    lines = runner.invoke(main, ["list", "--plugins", "stevedore-sklearn-logreg"]).output.splitlines()
    assert lines[0].split()[:4] == ["MODEL", "VERSION", "STATE", "PLUGIN"]
    assert lines[1].split()[:3] == ["iris", "1", "ready"]


def test_disabling_every_plugin_fails_check(runner: CliRunner) -> None:
    """Every plugin: the runtimes too (with one, a `check` of no model passes: an image for model files)."""
    groups = ("stevedore.predictors", "stevedore.runtimes")
    installed = {
        point.dist.name for group in groups for point in importlib.metadata.entry_points(group=group) if point.dist
    }
    result = runner.invoke(main, ["check", "--disable-plugins", ",".join(sorted(installed))])
    assert result.exit_code == 1 and "no models found" in result.output


def test_schema(runner: CliRunner) -> None:
    predict = json.loads(runner.invoke(main, ["schema", "iris"]).output)
    assert predict["items"]["minItems"] == 4
    score = json.loads(runner.invoke(main, ["schema", "iris", "--score"]).output)
    assert score["items"]["required"] == ["x", "y"]
    missing = runner.invoke(main, ["schema", "nope"])
    assert missing.exit_code == 1 and "no model named 'nope'" in missing.output


def test_new_plugin_identifiers() -> None:
    assert identifiers("my-model.v2") == {
        "model_name": "my-model.v2",
        "distribution": "stevedore-my-model-v2",
        "package": "stevedore_my_model_v2",
        "class_name": "MyModelV2Predictor",
    }


def test_new_plugin_refuses_bad_names_and_non_empty_directories(runner: CliRunner, tmp_path: Path) -> None:
    assert "must be letters" in runner.invoke(main, ["new-plugin", "no spaces"]).output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = runner.invoke(main, ["new-plugin", "ok", "--directory", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "not empty" in result.output


def test_new_plugin_passes_the_self_test(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "plugin"
    result = runner.invoke(main, ["new-plugin", "cli-demo", "--directory", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "stevedore_cli_demo" / "schemas" / "predict.json").is_file()
    monkeypatch.syspath_prepend(str(root))  # its package, named for this test alone

    predictor = importlib.import_module("stevedore_cli_demo.predictor").CliDemoPredictor()

    assert self_test(predictor).ready
    # Its own tests, with the test kit, run in test_pytest_plugin (installed in place) and in test_kit_installed
    # (built and installed from wheels in a fresh venv).


def test_new_plugin_with_a_dotted_name_writes_valid_toml(runner: CliRunner, tmp_path: Path) -> None:
    import tomllib

    assert runner.invoke(main, ["new-plugin", "my.model", "--directory", str(tmp_path / "p")]).exit_code == 0
    project = tomllib.loads((tmp_path / "p" / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["stevedore.predictors"] == {
        "my.model": "stevedore_my_model.predictor:MyModelPredictor"
    }


def test_config_prints_effective_settings_with_secrets_masked(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text('port = 9000\nworkers = 3\napi_keys = ["s3cret"]\n[models.iris]\nmax_batch_size = 8\n')
    env = {"STEVEDORE_CONFIG": str(config), "STEVEDORE_WORKERS": "2"}
    result = runner.invoke(main, ["config", "--port", "9100"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["port"], shown["workers"]) == (9100, 2)  # flag over variable over file
    assert shown["api_keys"] == "********" and "s3cret" not in result.output
    assert shown["models"]["iris"]["max_batch_size"] == 8


def test_an_unknown_setting_in_the_file_is_named(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text("[models.iris]\nmax_batch_sise = 8\n")
    result = runner.invoke(main, ["config", "--config", str(config)])
    assert result.exit_code == 2 and "setting models.iris.max_batch_sise" in result.output


def test_the_models_commands_say_plainly_when_no_server_answers() -> None:
    from .venvs import free_port

    result = CliRunner().invoke(main, ["models", "index", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "Error: cannot reach http://127.0.0.1:" in result.output
