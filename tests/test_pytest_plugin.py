"""The plugin author's test kit (``stevedore_server/pytest_plugin.py``), run by pytest's own ``pytester``.

Each test writes a plugin project and installs it in place, as ``pip install -e`` does: its package and its
``.dist-info`` (metadata and entry points) on ``sys.path``, and on ``PYTHONPATH`` for the servers the kit
starts. The runs are in process, except where what a run imports is the point.
"""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from stevedore_server.kit.scaffold import create_plugin

from .documentation import block, page

pytest_plugins = ["pytester"]

PLUGIN = "stevedore_server.pytest_plugin"

SUM = """
from stevedore_server import Predictor

ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}


class Sum(Predictor):
    name = "sum"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows):
        return [sum(row) for row in rows]
"""


def install_in_place(root: Path) -> None:
    """The project at ``root`` installed as an editable install leaves it: its ``.dist-info`` beside its package
    (``Pytester.syspathinsert`` and ``PYTHONPATH`` put that directory on the path)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project.get("entry-points", {})
    lines = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) for group, eps in groups.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))


def write_project(
    pytester: pytest.Pytester, modules: dict[str, str], entry_points: dict[str, str], ini: str = ""
) -> None:
    """A plugin distribution ``stevedore-kit-test`` of package ``kit_test``, installed in place."""
    entries = "".join(f'"{name}" = "{value}"\n' for name, value in entry_points.items())
    pytester.makepyprojecttoml(
        '[project]\nname = "stevedore-kit-test"\nversion = "0.1.0"\n\n'
        f'[project.entry-points."stevedore.predictors"]\n{entries}\n'
        f"[tool.pytest.ini_options]\n{ini}\n"
    )
    package = pytester.mkpydir("kit_test")
    for name, source in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(source))
    install_in_place(pytester.path)


@pytest.fixture
def kit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs load the kit and nothing else of this environment (the other pytest plugins' entry
    points, and the kit's own once installed, would be loaded twice), with its directory on the path."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    pytester.syspathinsert()
    return pytester


def generated(pytester: pytest.Pytester) -> Path:
    """``stevedore-server new-plugin kit-demo``, written and installed in place."""
    create_plugin("kit-demo", pytester.path)
    install_in_place(pytester.path)
    return pytester.path


def check(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``stevedore-server check`` of the package under test, a process of its own."""
    return pytester.run(sys.executable, "-m", "stevedore_server", "check", *args)


# -- the generated plugin, with the kit ----------------------------------------------------


@pytest.mark.server
def test_a_generated_plugin_passes_its_tests_the_check_and_the_readmes_example(kit: pytest.Pytester) -> None:
    create_plugin("my-model", kit.path)
    install_in_place(kit.path)
    (kit.path / "tests" / "test_readme.py").write_text(readme_example())

    result = kit.runpytest("-p", PLUGIN, "-v")

    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "pyproject.toml::stevedore[[]my-model 1[]] PASSED*",
            "tests/test_predictor.py::test_predicts_row_sums PASSED*",
            "tests/test_predictor.py::test_a_variant_served_from_a_test PASSED*",
        ]
    )


def readme_example() -> str:
    """The documentation's example of a plugin's tests (for the plugin ``new-plugin my-model`` writes)."""
    return block("python", "stevedore_client", page("plugins/testing.md"))


def test_an_invalid_fixture_fails_the_check_in_the_words_of_check(kit: pytest.Pytester) -> None:
    root = generated(kit)
    (root / "stevedore_kit_demo" / "fixtures" / "predict.json").write_text('[["one", 2.0]]')

    result = kit.runpytest("-p", PLUGIN, "pyproject.toml")
    checked = check(kit, "--plugins", "stevedore-kit-demo")

    result.assert_outcomes(failed=1)
    [reported] = [line for line in checked.outlines if "FAILED" in line]
    assert reported == (
        "kit-demo 1 (entry point 'kit-demo' (stevedore.predictors) of stevedore-kit-demo 0.1.0): FAILED: schemas "
        "and fixtures failed: PluginError: predict_fixture does not match predict_schema (a bug in the plugin): "
        '/0/0: "one" is not of type "number"'
    )
    assert reported in result.outlines
    result.stdout.fnmatch_lines(["*stevedore-server check: stevedore[[]kit-demo 1[]]*", reported])
    assert "(as `stevedore-server check --plugins stevedore-kit-demo` reports it)" in result.outlines
    assert "pytest_plugin.py" not in result.stdout.str()  # the words, not a traceback of the kit


@pytest.mark.server
def test_the_live_server_fixture_names_why_the_server_is_not_ready(kit: pytest.Pytester) -> None:
    root = generated(kit)
    (root / "stevedore_kit_demo" / "fixtures" / "score.json").write_text('[{"x": [1.0]}]')

    result = kit.runpytest("-p", PLUGIN, "-k", "row_sums")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*stevedore_live_server: stevedore-kit-demo: the server is not ready (503): *kit-demo 1: schemas and "
            "fixtures failed: PluginError: score_fixture does not match score_schema*",
        ]
    )


# -- which runs have the checks ------------------------------------------------------------


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_a_plain_run_and_testpaths_collect_the_checks_and_named_paths_do_not(kit: pytest.Pytester) -> None:
    generated(kit)
    tests = [
        "tests/test_predictor.py::test_predicts_row_sums",
        "tests/test_predictor.py::test_a_variant_served_from_a_test",
    ]

    plain = kit.runpytest("-p", PLUGIN, "--collect-only", "-q")
    named = kit.runpytest("-p", PLUGIN, "--collect-only", "-q", "tests")
    alone = kit.runpytest("-p", PLUGIN, "--collect-only", "-q", "pyproject.toml")
    deselected = kit.runpytest("-p", PLUGIN, "--collect-only", "-q", "-k", "not stevedore")
    with open(kit.path / "pyproject.toml", "a") as pyproject:
        pyproject.write('testpaths = ["tests"]\n')
    from_testpaths = kit.runpytest("-p", PLUGIN, "--collect-only", "-q")

    assert collected(plain) == ["pyproject.toml::stevedore[kit-demo 1]", *tests]
    assert collected(named) == tests
    assert collected(alone) == ["pyproject.toml::stevedore[kit-demo 1]"]
    assert collected(deselected) == tests
    assert collected(from_testpaths) == [*tests, "pyproject.toml::stevedore[kit-demo 1]"]


def test_the_distribution_named_in_the_ini_file_is_the_package_under_test(kit: pytest.Pytester) -> None:
    write_project(kit, {"predictors": SUM}, {"sum": "kit_test.predictors:Sum"})
    (kit.path / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\nstevedore_distribution = 'stevedore-kit-test'\n"
    )

    result = kit.runpytest("-p", PLUGIN, "-v")
    from_the_command_line = kit.runpytest("-p", PLUGIN, "-v", "--stevedore-distribution", "stevedore-kit-test")
    (kit.path / "pyproject.toml").write_text("")
    without = kit.runpytest("-p", PLUGIN, "-v")

    result.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]sum 1[]] PASSED*"])
    from_the_command_line.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]sum 1[]] PASSED*"])
    assert without.ret == pytest.ExitCode.NO_TESTS_COLLECTED


# -- opting out ----------------------------------------------------------------------------


@pytest.mark.server
def test_an_opted_out_model_is_skipped_with_its_reason_and_not_loaded_by_the_server(kit: pytest.Pytester) -> None:
    modules = {
        "predictors": SUM + "\n\nclass NeedsGPU(Sum):\n    name = 'gpu'\n\n    def load(self):\n"
        "        raise RuntimeError('no CUDA device')\n",
        "test_server": """
            def test_the_opted_out_model_is_listed_not_loaded(stevedore_client):
                index = stevedore_client.post("/v2/repository/index").json()
                assert sorted((m["name"], m["state"]) for m in index) == [("gpu", "UNAVAILABLE"), ("sum", "READY")]
        """,
    }
    entry_points = {"sum": "kit_test.predictors:Sum", "gpu": "kit_test.predictors:NeedsGPU"}
    write_project(kit, modules, entry_points, ini='stevedore_skip = ["gpu: needs a GPU"]')

    result = kit.runpytest("-p", PLUGIN, "-rs", "-v", "pyproject.toml", "kit_test/test_server.py")

    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]gpu 1[]] SKIPPED (needs a GPU)*"])


def test_opting_out_what_is_no_model_of_the_package_fails(kit: pytest.Pytester) -> None:
    ini = 'stevedore_skip = ["sums", "two words"]'
    write_project(kit, {"predictors": SUM}, {"sum": "kit_test.predictors:Sum"}, ini=ini)

    result = kit.runpytest("-p", PLUGIN, "-v")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "pyproject.toml::stevedore[[]stevedore_skip[]] FAILED*",
            "stevedore_skip: 'two words' is not NAME or 'NAME: why'; stevedore_skip names sums, which "
            "stevedore-kit-test does not provide",
        ]
    )


# -- failures of the package, as check reports them ---------------------------------------


def test_a_plugin_that_does_not_import_fails_its_own_item(kit: pytest.Pytester) -> None:
    modules = {"predictors": SUM, "broken": "raise ImportError('kit-test needs libwidget')\n"}
    write_project(kit, modules, {"sum": "kit_test.predictors:Sum", "broken": "kit_test.broken:Model"})

    result = kit.runpytest("-p", PLUGIN, "-v")
    checked = check(kit, "--plugins", "stevedore-kit-test")

    result.assert_outcomes(passed=1, failed=1)
    [reported] = [line for line in checked.outlines if line.startswith("plugin ")]
    assert reported == (
        "plugin entry point 'broken' (stevedore.predictors) of stevedore-kit-test 0.1.0: FAILED: "
        "ImportError: kit-test needs libwidget"
    )
    result.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]plugin broken[]] FAILED*", reported])


ROUTES = """
from starlette.responses import JSONResponse

from stevedore_server import hookimpl


async def answer(request):
    return JSONResponse({})


@hookimpl
def stevedore_routes(register):
    register("/about", answer, model="double")  # a sibling model's: every model's check is fine with it
    SHADOWING
"""
SHADOWING = 'register("/predict", answer, ["POST"], model="sum")  # POST /models/sum/predict is the server\'s'


@pytest.mark.parametrize("shadowing", [True, False])
def test_a_route_that_shadows_a_built_in_one_fails_the_check_and_one_under_a_sibling_model_passes(
    kit: pytest.Pytester, shadowing: bool
) -> None:
    double = SUM.replace('"sum"', '"double"').replace("class Sum", "class Double")
    modules = {
        "predictors": SUM,
        "doubles": double,
        "routes": ROUTES.replace("SHADOWING", SHADOWING if shadowing else ""),
    }
    write_project(kit, modules, {"sum": "kit_test.predictors:Sum", "double": "kit_test.doubles:Double"})
    pyproject = kit.path / "pyproject.toml"  # the routes' module, as the hooks' entry point
    pyproject.write_text(
        pyproject.read_text() + '\n[project.entry-points."stevedore.hooks"]\nroutes = "kit_test.routes"\n'
    )
    [info] = kit.path.glob("*.dist-info")
    with (info / "entry_points.txt").open("a") as entry_points:
        entry_points.write("\n[stevedore.hooks]\nroutes = kit_test.routes\n")

    result = kit.runpytest("-p", PLUGIN, "-v")
    checked = check(kit, "--plugins", "stevedore-kit-test")

    if not shadowing:
        result.assert_outcomes(passed=2)
        assert checked.ret == 0, checked.stdout.str() + checked.stderr.str()
        return
    result.assert_outcomes(passed=2, failed=1)
    [reported] = [line for line in checked.outlines if line.startswith("routes: ")]
    assert reported.startswith("routes: FAILED: POST /models/sum/predict of plugin ")
    assert "would shadow the built-in route POST /models/{name}/predict" in reported
    result.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]routes[]] FAILED*", reported])


def test_a_model_provided_twice_fails_the_package_as_check_does(kit: pytest.Pytester) -> None:
    write_project(kit, {"predictors": SUM}, {"sum": "kit_test.predictors:Sum", "again": "kit_test.predictors:Sum"})

    result = kit.runpytest("-p", PLUGIN, "-v")
    checked = check(kit, "--plugins", "stevedore-kit-test")

    result.assert_outcomes(failed=1)
    [reported] = [line for line in checked.errlines if line.startswith("Error: ")]
    assert "model 'sum' version '1' is provided twice" in reported
    result.stdout.fnmatch_lines(["pyproject.toml::stevedore[[]stevedore-kit-test[]] FAILED*", reported])


def test_a_package_not_installed_fails_with_how_to_install_it(kit: pytest.Pytester) -> None:
    write_project(kit, {"predictors": SUM}, {"sum": "kit_test.predictors:Sum"})
    for info in kit.path.glob("*.dist-info"):
        for path in info.iterdir():
            path.unlink()
        info.rmdir()
    kit.makepyfile(test_server="def test_served(stevedore_client):\n    pass\n")

    result = kit.runpytest("-p", PLUGIN, "-v")

    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*stevedore_live_server: the package under test, stevedore-kit-test, is not installed*",
            "the package under test, stevedore-kit-test, is not installed in this environment: install it "
            "(pip install -e .)*",
        ]
    )


def test_declared_tensors_the_server_cannot_serve_fail(kit: pytest.Pytester) -> None:
    bad = SUM + "\n\nclass Wide(Sum):\n    tensor_inputs = [{'name': 'x', 'datatype': 'FP128', 'shape': [-1, 2]}]\n"
    write_project(kit, {"predictors": bad}, {"wide": "kit_test.predictors:Wide"})

    result = kit.runpytest("-p", PLUGIN)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["sum 1: the server serves it without its declared tensors *: tensor_inputs: datatype 'FP128' is not one*"]
    )


def test_a_model_without_tensors_passes_with_a_warning(kit: pytest.Pytester) -> None:
    objects = """
        from stevedore_server import Predictor

        class Objects(Predictor):
            name = "objects"
            predict_schema = {"type": "object"}
            predict_fixture = {"a": 1}

            def run_predict(self, payload):
                return len(payload)
    """
    write_project(kit, {"predictors": objects}, {"objects": "kit_test.predictors:Objects"})

    result = kit.runpytest("-p", PLUGIN)

    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*NoTensorInterfaceWarning: objects 1 has no V2 interface: the predict schema is not an array*"]
    )


# -- serving an instance from a test -------------------------------------------------------


@pytest.mark.server
def test_serve_answers_over_loopback_for_an_instance_that_is_no_entry_point(kit: pytest.Pytester) -> None:
    kit.makepyfile(
        test_serve=SUM
        + """

def test_serve(stevedore_serve):
    client = stevedore_serve(Sum(version="2"), Sum(name="broken", predict_fixture=[["x"]]))

    assert str(client.base_url).startswith("http://127.0.0.1:")
    assert client.post("/models/sum/predict", json=[[1, 2], [3]]).json()["predictions"] == [3, 3]
    broken = client.post("/models/broken/predict", json=[[1]])
    assert broken.status_code == 503
    assert "predict_fixture does not match predict_schema" in broken.json()["error"]
"""
    )

    result = kit.runpytest("-p", PLUGIN)

    result.assert_outcomes(passed=1)


# -- what it costs a project that is no plugin ---------------------------------------------


def test_a_project_that_is_no_plugin_gets_nothing_and_imports_nothing_of_the_server(kit: pytest.Pytester) -> None:
    kit.makepyprojecttoml('[project]\nname = "unrelated"\nversion = "1"\n')
    kit.makepyfile(
        test_unrelated="""
        import sys

        def test_the_kit_is_loaded_and_nothing_heavy_is_imported():
            assert "stevedore_server.pytest_plugin" in sys.modules
            heavy = {"numpy", "uvicorn", "starlette", "httpx", "jsonschema_rs", "stevedore_server.plugins.loading"}
            assert heavy & set(sys.modules) == set()
        """,
        test_fixture="def test_live(stevedore_live_server):\n    pass\n",
    )

    result = kit.runpytest_subprocess("-p", PLUGIN, "-v")

    result.assert_outcomes(passed=1, errors=1)
    assert "stevedore[" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*stevedore: no package under test: name its distribution with the*"])
