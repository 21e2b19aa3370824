"""The names the documentation documents for plugin authors and operators keep working, whatever moves inside (the old
module paths plugins imported: ``test_layers``)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from importlib.metadata import distribution
from pathlib import Path

import pytest
from click.testing import CliRunner

import stevedore_server
from stevedore_server.cli import main

from .documentation import ALL_TEXT, page


def test_the_plugin_contract_is_where_the_documentation_says() -> None:
    from stevedore_server import Predictor, __version__, hookimpl
    from stevedore_server.hookspecs import PROJECT, HealthCheck, hookspec
    from stevedore_server.predictor import Predictor as ContractPredictor
    from stevedore_server.testing import self_test

    assert Predictor is ContractPredictor and callable(self_test) and callable(HealthCheck.__call__)
    assert hookimpl.project_name == hookspec.project_name == PROJECT == "stevedore" and __version__
    hooks = {name for name in dir(stevedore_server.hookspecs) if name.startswith("stevedore_")}
    documented = set(re.findall(r"^- `(stevedore_[a-z_]+)\(", page("concepts.md"), flags=re.M))
    assert (
        documented
        == hooks
        == {
            "stevedore_health_checks",
            "stevedore_catalogue_metadata",
            "stevedore_register_predictors",
            "stevedore_routes",
            "stevedore_inference_logged",
        }
    )


def test_the_entry_points_of_the_installed_distribution_resolve() -> None:
    entry_points = {(ep.group, ep.name): ep for ep in distribution("stevedore-server").entry_points}
    assert entry_points[("console_scripts", "stevedore-server")].load() is main
    pytest_plugin = entry_points[("pytest11", "stevedore")]
    assert pytest_plugin.value == "stevedore_server.pytest_plugin"  # the module the documentation names
    fixtures = {"stevedore_live_server", "stevedore_client", "stevedore_serve"}
    assert fixtures <= set(vars(pytest_plugin.load()))
    assert hasattr(pytest_plugin.load(), "NoTensorInterfaceWarning")


def test_what_other_processes_run_by_path_is_there() -> None:
    """``python -m stevedore_server.worker`` (run by other environments: ``test_layers`` runs it for real) and
    ``stevedore_server.rayserve.app:build`` (in saved Serve configs; read, as Ray is not installed here)."""
    worker = importlib.util.find_spec("stevedore_server.worker")
    assert worker is not None and 'if __name__ == "__main__":' in Path(str(worker.origin)).read_text()
    rayserve_app = Path(stevedore_server.__file__).parent / "rayserve" / "app.py"
    functions = {node.name for node in ast.parse(rayserve_app.read_text()).body if isinstance(node, ast.FunctionDef)}
    assert "build" in functions
    assert "stevedore_server.rayserve.app:build" in ALL_TEXT and "python -m stevedore_server.worker" in ALL_TEXT


@pytest.mark.parametrize(
    "command", re.findall(r"^\| `stevedore-server ([a-z-]+)` \|", page("reference/commands.md"), flags=re.M)
)
def test_every_documented_command_answers_its_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert command in main.commands


def test_every_documented_setting_is_a_flag_of_run_or_a_file_setting() -> None:
    """The settings reference (``test_docs`` keeps it equal to the settings) names each flag of ``run``."""
    flags = re.findall(r"^\| `[a-z_]+` \| `(--[a-z-]+)` \|", page("reference/settings.md"), flags=re.M)
    run_options = {option for parameter in main.commands["run"].params for option in parameter.opts}
    assert flags and set(flags) <= run_options
