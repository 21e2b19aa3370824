"""The plugin author's test kit as an author meets it: ``stevedore-server new-plugin``, the plugin built and
installed with the core from wheels in a fresh venv, its tests run by that venv's ``pytest`` (the kit loaded
by its ``pytest11`` entry point, as ``pip install stevedore-server`` brings it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .venvs import Venv, build_wheels, describe

pytestmark = pytest.mark.venv

CHECK_LINE = (
    "kit-demo 1 (entry point 'kit-demo' (stevedore.predictors) of stevedore-kit-demo 0.1.0): FAILED: schemas and "
    "fixtures failed: PluginError: predict_fixture does not match predict_schema (a bug in the plugin): /0/1: "
    '"two" is not of type "number"'
)


def install(environment: Venv, source: Path, wheelhouse: Path, out: Path) -> None:
    """The plugin's wheel, built by the venv's pip, installed in place of any earlier build."""
    [wheel] = build_wheels([source], out, wheelhouse, python=environment.python)
    environment.install("--force-reinstall", "--no-deps", str(wheel))


def test_a_generated_plugin_passes_its_tests_then_fails_them_in_the_words_of_check_when_its_fixture_breaks(
    wheelhouse: Path, tmp_path: Path
) -> None:
    environment = Venv.create(tmp_path / "venv", wheelhouse)
    environment.install("stevedore-server", "pytest")
    source = tmp_path / "stevedore-kit-demo"
    environment.run("stevedore-server", "new-plugin", "kit-demo", "--directory", source)
    install(environment, source, wheelhouse, tmp_path / "dist")

    # The venv's pytest script, not `python -m pytest`, so the tests import the installed wheel, not the source.
    passing = environment.run("pytest", "-v", "-p", "no:cacheprovider", cwd=source, check=False)

    assert passing.returncode == 0, describe(passing)
    assert "pyproject.toml::stevedore[kit-demo 1] PASSED" in passing.stdout
    assert "3 passed" in passing.stdout

    (source / "stevedore_kit_demo" / "fixtures" / "predict.json").write_text('[[1.0, "two"]]')
    install(environment, source, wheelhouse, tmp_path / "dist-broken")
    failing = environment.run("pytest", "-v", "-p", "no:cacheprovider", cwd=source, check=False)
    checked = environment.run("stevedore-server", "check", check=False)

    assert failing.returncode == pytest.ExitCode.TESTS_FAILED, describe(failing)
    assert checked.returncode == 1, describe(checked)
    assert CHECK_LINE in checked.stdout.splitlines()
    assert CHECK_LINE in failing.stdout.splitlines(), describe(failing)
    assert "FAILED pyproject.toml::stevedore[kit-demo 1]" in failing.stdout
    # The server fixture says why the server does not serve; the test of an instance served from it still passes.
    assert "ERROR tests/test_predictor.py::test_predicts_row_sums" in failing.stdout
    assert "the server is not ready (503)" in failing.stdout
    assert "1 failed, 1 passed, 1 error" in failing.stdout
