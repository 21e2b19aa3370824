"""Real distributions in a real virtual environment, and the whole user path end to end.

Every test here installs built wheels into a fresh venv and runs that venv's
``stevedore-server`` command, over loopback HTTP where it serves. Nothing is
imported from the source tree, so packaging mistakes (a schema file left out of
the wheel, a wrong entry point, a missing dependency) fail here.
"""

from __future__ import annotations

import json
import math
import platform
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .venvs import CONTRIB, INSTALLED, REPO, Server, Venv, build_wheels, copy_source, describe

pytestmark = pytest.mark.venv

IRIS_DATA = CONTRIB / "stevedore_sklearn_logreg"

GOOD_MODELS = [("alpha", "1.0"), ("alpha", "1.9"), ("alpha", "1.10"), ("beta", "1"), ("gamma", "1"), ("delta", "1")]
SETOSA = [5.1, 3.5, 1.4, 0.2]
#: Textbook members of each species (rows 1, 51 and 101 of the iris data set).
LABELLED_IRIS = [{"x": SETOSA, "y": 0}, {"x": [7.0, 3.2, 4.7, 1.4], "y": 1}, {"x": [6.3, 3.3, 6.0, 2.5], "y": 2}]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def list_report(environment: Venv, **env: str) -> dict[str, Any]:
    """``stevedore-server list --json`` in ``environment``, parsed."""
    result = environment.run("stevedore-server", "list", "--json", env=environment.env(**env))
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_clean_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is ``status`` with a JSON ``{"error": ...}`` body and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


# -- shared builds -------------------------------------------------------------


@pytest.fixture(scope="session")
def test_plugin_wheels(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distributions under tests/installed/, built to wheels offline."""
    root = tmp_path_factory.mktemp("test-plugins")
    sources = [copy_source(INSTALLED / name, root / "src" / name) for name in ("good", "broken", "dup")]
    built = build_wheels(sources, root / "wheels", wheelhouse)
    assert len(built) == 3, built
    return root / "wheels"


# -- discovery of real distributions -------------------------------------------


@pytest.fixture(scope="module")
def plugins_venv(wheelhouse: Path, test_plugin_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with the core and the good, broken and duplicate test plugins."""
    environment = Venv.create(tmp_path_factory.mktemp("plugins") / "venv", wheelhouse, test_plugin_wheels)
    environment.install("stevedore-server", "stevedore-test-good", "stevedore-test-broken", "stevedore-test-dup")
    return environment


def test_the_venvs_run_this_checkout(ops_venv: Venv) -> None:
    """A venv gets the stevedore-server wheel that this run built from the checkout. uv once installed one
    that its cache kept from an earlier run whose wheelhouse had the same path, and the tests ran old code."""
    where = "import pathlib, stevedore_server; print(pathlib.Path(stevedore_server.__file__).parent)"
    installed = Path(ops_venv.run("python", "-c", where).stdout.strip())
    source = REPO / "stevedore_server"
    modules = [path.relative_to(source) for path in source.rglob("*.py")]
    stale = [
        str(path)
        for path in modules
        if not (installed / path).is_file() or (installed / path).read_bytes() != (source / path).read_bytes()
    ]
    assert modules and not stale, f"installed in {installed}, unlike the checkout: {stale}"


def test_list_reports_good_models_ready_and_the_broken_plugin(plugins_venv: Venv) -> None:
    report = list_report(plugins_venv, STEVEDORE_DISABLE_PLUGINS="stevedore-test-dup")

    assert [(m["name"], m["version"], m["state"]) for m in report["models"]] == [
        (name, version, "ready") for name, version in GOOD_MODELS
    ]
    from_entry_points = [m for m in report["models"] if m["name"] != "delta"]
    assert {(m["distribution"], m["distribution_version"]) for m in from_entry_points} == {
        ("stevedore-test-good", "2.3.4")
    }
    assert {m["entry_point"] for m in from_entry_points} == {"family", "gamma"}
    [failed] = report["failed_plugins"]
    assert failed["entry_point"] == "broken"
    assert failed["group"] == "stevedore.predictors"
    assert (failed["distribution"], failed["distribution_version"]) == ("stevedore-test-broken", "0.1.0")
    assert failed["error"] == "ImportError: stevedore-test-broken needs libwidget, which is not installed"


def test_list_order_is_deterministic(plugins_venv: Venv) -> None:
    first = list_report(plugins_venv, STEVEDORE_DISABLE_PLUGINS="stevedore-test-dup")
    second = list_report(plugins_venv, STEVEDORE_DISABLE_PLUGINS="stevedore-test-dup")

    assert first == second


@pytest.mark.parametrize("command", ["list", "check"])
def test_duplicate_model_is_a_startup_error_naming_both_distributions(plugins_venv: Venv, command: str) -> None:
    result = plugins_venv.run("stevedore-server", command, check=False)

    assert result.returncode != 0, describe(result)
    # A message for a person, not a traceback (the broken plugin's logged traceback is expected alongside).
    assert "Error: model 'alpha' version '1.10' is provided twice" in result.stderr
    assert "stevedore-test-good 2.3.4" in result.stderr
    assert "stevedore-test-dup 0.5.0" in result.stderr
    assert "StartupError" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_server_refuses_to_start_with_a_duplicate_model(plugins_venv: Venv, tmp_path: Path, workers: str) -> None:
    server = Server.start(plugins_venv, tmp_path / "server.log", "--workers", workers)
    try:
        exit_code = server.process.wait(timeout=60)
    finally:
        server.stop()

    assert exit_code == 1
    assert "stevedore-test-good" in server.log() and "stevedore-test-dup" in server.log()
    assert "Error: model 'alpha' version '1.10' is provided twice" in server.log()
    assert "StartupError" not in server.log()  # a plain message, not the startup error's traceback


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param([], {"STEVEDORE_DISABLE_PLUGINS": "stevedore-test-dup,stevedore-test-broken"}, id="distributions"),
        pytest.param([], {"STEVEDORE_DISABLE_PLUGINS": "alpha-copy, broken"}, id="entry-points"),
        pytest.param([], {"STEVEDORE_DISABLE_PLUGINS": "Stevedore_Test_Dup,stevedore.test.broken"}, id="unnormalised"),
        pytest.param(["--disable-plugins", "stevedore-test-dup,stevedore-test-broken"], {}, id="flag"),
    ],
)
def test_disabling_the_culprits_gives_a_clean_check(plugins_venv: Venv, args: list[str], env: dict[str, str]) -> None:
    result = plugins_venv.run("stevedore-server", "check", *args, env=plugins_venv.env(**env), check=False)

    assert result.returncode == 0, describe(result)
    assert f"all {len(GOOD_MODELS)} models passed" in result.stdout
    assert "FAILED" not in result.stdout


def test_selecting_one_distribution_loads_only_it(plugins_venv: Venv) -> None:
    report = list_report(plugins_venv, STEVEDORE_PLUGINS="stevedore-test-good")

    assert [(m["name"], m["version"]) for m in report["models"]] == GOOD_MODELS
    assert report["failed_plugins"] == []
    only_good = plugins_venv.env(STEVEDORE_PLUGINS="stevedore-test-good")
    result = plugins_venv.run("stevedore-server", "check", env=only_good)
    assert f"all {len(GOOD_MODELS)} models passed" in result.stdout


@pytest.mark.parametrize(("args", "env"), [(["--strict"], {}), ([], {"STEVEDORE_STRICT": "true"})], ids=["flag", "env"])
def test_strict_run_with_a_broken_plugin_exits_nonzero(
    plugins_venv: Venv, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    log = tmp_path / "server.log"
    server = Server.start(plugins_venv, log, *args, STEVEDORE_DISABLE_PLUGINS="stevedore-test-dup", **env)
    try:
        exit_code = server.process.wait(timeout=60)
    finally:
        server.stop()

    assert exit_code == 1
    assert "Error: --strict: not every plugin and model loaded" in server.log()
    assert "StartupError" not in server.log()
    assert "entry point 'broken' (stevedore.predictors) of stevedore-test-broken 0.1.0" in server.log()


@pytest.fixture(scope="module")
def plugins_server(plugins_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The real server of the plugins venv, the duplicate disabled and the broken plugin left in."""
    log = tmp_path_factory.mktemp("plugins-server") / "server.log"
    server = Server.start(plugins_venv, log, STEVEDORE_DISABLE_PLUGINS="stevedore-test-dup")
    try:
        server.wait_for("/livez")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def test_healthz_shows_the_hook_check_and_the_failed_plugin(plugins_server: httpx.Client) -> None:
    response = plugins_server.get("/healthz")

    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "failing"
    assert report["checks"]["good-cache"] == {"ok": True, "detail": "cache warm"}
    assert report["checks"]["models"]["ok"] is True
    assert report["checks"]["plugins"]["ok"] is False
    assert "stevedore-test-broken" in report["checks"]["plugins"]["detail"]
    [failed] = report["failed_plugins"]
    assert (failed["entry_point"], failed["distribution"]) == ("broken", "stevedore-test-broken")
    assert [(m["name"], m["version"], m["state"]) for m in report["models"]] == [
        (name, version, "ready") for name, version in GOOD_MODELS
    ]


def test_readyz_is_503_while_a_plugin_has_failed(plugins_server: httpx.Client) -> None:
    response = plugins_server.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert [reason for reason in body["reasons"] if reason.startswith("plugins: ")], body


def test_catalogue_carries_hook_and_distribution_metadata(plugins_server: httpx.Client, plugins_venv: Venv) -> None:
    catalogue = plugins_server.get("/models").json()

    expected = {
        "runs_in": {"kind": "threads", "python": str(plugins_venv.python), "python_version": platform.python_version()},
        "team": "test",
        "distribution": "stevedore-test-good",
        "distribution_version": "2.3.4",
        "author": "Ada Tester",
        "author_email": "ada@example.org",
        "license": "MIT",
        "summary": "Test plugin: models from a callable, a Predictor subclass and a hook",
        "home_page": "https://example.org/stevedore-test-good",
    }
    # delta comes from the registration hook: its distribution is found through its package.
    assert {(m["name"], m["version"]): m["metadata"] for m in catalogue["models"]} == {
        model: expected for model in GOOD_MODELS
    }
    assert [failed["entry_point"] for failed in catalogue["failed_plugins"]] == ["broken"]


def test_latest_version_is_the_pep440_highest(plugins_server: httpx.Client) -> None:
    detail = plugins_server.get("/models/alpha").json()

    assert detail["version"] == "1.10"
    assert detail["versions"] == ["1.10", "1.9", "1.0"]
    prediction = plugins_server.post("/models/alpha/predict", json=[[1, 2]]).json()
    assert prediction == {"model_name": "alpha", "model_version": "1.10", "predictions": [30]}


@pytest.mark.parametrize(("version", "expected"), [("1.0", 3), ("1.9", 27), ("1.10", 30)])
def test_each_version_predicts_under_its_own_path(plugins_server: httpx.Client, version: str, expected: int) -> None:
    response = plugins_server.post(f"/models/alpha/versions/{version}/predict", json=[[1, 2]])

    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": "alpha", "model_version": version, "predictions": [expected]}


def test_package_data_schemas_and_fixtures_ship_in_the_wheel(plugins_server: httpx.Client) -> None:
    schema = plugins_server.get("/models/gamma/schemas/score").json()
    score = plugins_server.get("/models/gamma/score").json()

    assert schema == read_json(INSTALLED / "good" / "stevedore_test_good" / "schemas" / "labelled.json")
    assert score == {"model_name": "gamma", "model_version": "1", "score": 0.75}


def test_hook_registered_model_is_served(plugins_server: httpx.Client) -> None:
    response = plugins_server.post("/models/delta/predict", json=[[1, 2], [4]])

    assert response.json() == {"model_name": "delta", "model_version": "1", "predictions": [6, 8]}


# -- the user's path, end to end ----------------------------------------------------


@pytest.fixture(scope="module")
def user_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with the core and the example plugin installed from their wheels."""
    environment = Venv.create(tmp_path_factory.mktemp("user") / "venv", wheelhouse)
    environment.install("stevedore-server", "stevedore-sklearn-logreg")
    return environment


@pytest.fixture(scope="module")
def demo_plugin(user_venv: Venv, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``stevedore-server new-plugin demo-model``, built by the venv's pip, installed with its ``test`` extra."""
    root = tmp_path_factory.mktemp("demo")
    source = root / "stevedore-demo-model"
    created = user_venv.run("stevedore-server", "new-plugin", "demo-model", "--directory", source)
    assert f"created {source}" in created.stdout
    build_wheels([source], root / "dist", wheelhouse, python=user_venv.python)
    user_venv.install("--find-links", str(root / "dist"), "stevedore-demo-model[test]")
    return source


def test_generated_plugin_tests_pass(user_venv: Venv, demo_plugin: Path) -> None:
    # The venv's pytest script, not `python -m pytest`, so the tests import the installed wheel, not the source.
    result = user_venv.run("pytest", "-q", "-p", "no:cacheprovider", cwd=demo_plugin, check=False)

    assert result.returncode == 0, describe(result)
    assert "3 passed" in result.stdout  # with the kit's check of demo-model


def test_check_passes_for_every_installed_model(user_venv: Venv, demo_plugin: Path) -> None:
    result = user_venv.run("stevedore-server", "check", check=False)

    assert result.returncode == 0, describe(result)
    assert "all 3 models passed" in result.stdout


@pytest.fixture(scope="module")
def user_server(user_venv: Venv, demo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """``stevedore-server run`` of the user venv on a free loopback port, ready, then stopped by pid."""
    server = Server.start(user_venv, tmp_path_factory.mktemp("user-server") / "server.log")
    try:
        server.wait_for("/readyz", 200, deadline=120)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        exit_code = server.stop()
    # uvicorn re-raises the signal it handled once shutdown is done, so a clean stop may exit by SIGTERM.
    assert exit_code in (0, -signal.SIGTERM), f"server did not stop on SIGTERM:\n{server.log()}"
    assert "Application shutdown complete" in server.log()


def test_health_routes(user_server: httpx.Client) -> None:
    live = user_server.get("/livez")
    ready = user_server.get("/readyz")
    health = user_server.get("/healthz")

    assert (live.status_code, live.json()) == (200, {"status": "live"})
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok"
    assert report["uptime"] > 0
    assert report["failed_plugins"] == []
    assert {name: check["ok"] for name, check in report["checks"].items()} == {"models": True, "plugins": True}
    assert {(m["name"], m["state"]) for m in report["models"]} == {
        ("iris", "ready"),
        ("iris-proba", "ready"),
        ("demo-model", "ready"),
    }


def test_catalogue_lists_every_installed_model(user_server: httpx.Client) -> None:
    response = user_server.get("/models")

    assert response.status_code == 200
    catalogue = response.json()
    models = {m["name"]: m for m in catalogue["models"]}
    assert set(models) == {"iris", "iris-proba", "demo-model"}
    assert all(m["ready"] and m["state"] == "ready" and m["reason"] is None for m in models.values())
    assert catalogue["failed_plugins"] == []
    assert models["iris"]["metadata"]["distribution"] == "stevedore-sklearn-logreg"
    assert models["iris"]["metadata"]["license"] == "MIT"
    assert models["demo-model"]["metadata"]["distribution"] == "stevedore-demo-model"


@pytest.mark.parametrize("base", ["/models/iris", "/models/iris/versions/1"])
def test_model_detail_and_ready(user_server: httpx.Client, base: str) -> None:
    detail = user_server.get(base)
    ready = user_server.get(f"{base}/ready")

    assert detail.status_code == 200
    body = detail.json()
    assert (body["name"], body["version"], body["versions"], body["ready"]) == ("iris", "1", ["1"], True)
    assert body["has_score"] is True
    assert body["created"].endswith("Z")
    assert body["links"]["predict"] == "/models/iris/versions/1/predict"
    assert (ready.status_code, ready.json()) == (200, {"name": "iris", "version": "1", "ready": True, "reason": None})


@pytest.mark.parametrize("base", ["/models/iris", "/models/iris/versions/1"])
@pytest.mark.parametrize("kind", ["predict", "score"])
def test_schema_routes_give_the_plugins_schemas(user_server: httpx.Client, base: str, kind: str) -> None:
    response = user_server.get(f"{base}/schemas/{kind}")

    assert response.status_code == 200
    assert response.json() == read_json(IRIS_DATA / "schemas" / f"{kind}.json")


@pytest.mark.parametrize("base", ["/models/iris", "/models/iris/versions/1"])
def test_predict(user_server: httpx.Client, base: str) -> None:
    response = user_server.post(f"{base}/predict", json=[SETOSA])

    assert response.status_code == 200
    assert response.json() == {"model_name": "iris", "model_version": "1", "predictions": [0]}


def test_predict_probabilities(user_server: httpx.Client) -> None:
    [probabilities] = user_server.post("/models/iris-proba/predict", json=[SETOSA]).json()["predictions"]

    assert math.isclose(sum(probabilities), 1.0)
    assert max(probabilities) == probabilities[0]


@pytest.mark.parametrize("base", ["/models/iris", "/models/iris/versions/1"])
def test_score_on_labelled_rows_and_on_the_fixture(user_server: httpx.Client, base: str) -> None:
    posted = user_server.post(f"{base}/score", json=LABELLED_IRIS)
    on_fixture = user_server.get(f"{base}/score")

    assert posted.status_code == 200
    assert posted.json() == {"model_name": "iris", "model_version": "1", "score": 1.0}
    assert on_fixture.status_code == 200
    assert on_fixture.json()["score"] > 0.9


def test_generated_plugin_is_served(user_server: httpx.Client) -> None:
    response = user_server.post("/models/demo-model/predict", json=[[1.0, 2.0, 3.0], [0.5]])

    assert response.status_code == 200
    assert response.json() == {"model_name": "demo-model", "model_version": "1", "predictions": [6.0, 0.5]}


@pytest.mark.parametrize(("path", "marker"), [("/docs", "swagger-ui"), ("/redoc", "redoc")])
def test_documentation_pages(user_server: httpx.Client, path: str, marker: str) -> None:
    response = user_server.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text and "/openapi.json" in response.text
    # The scripts and styles are package data: served from the installed wheel, not a CDN.
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', response.text)
    assert assets
    for asset in assets:
        assert user_server.get(asset).status_code == 200, asset


def test_the_web_console_is_served_from_the_wheel(user_server: httpx.Client) -> None:
    """Its templates, script, styles and vendored files are package data of the wheel."""
    page = user_server.get("/")
    assets = re.findall(r'(?:src|href)="(/console/assets/[^"]+)"', page.text)

    assert page.status_code == 200 and len(assets) == 5
    for asset in assets:
        assert user_server.get(asset).status_code == 200, asset
    models = user_server.get("/console/fragments/models").text
    assert 'data-model="iris"' in models and 'data-model="demo-model"' in models
    assert 'id="try-it"' in user_server.get("/console/fragments/models/iris").text


@pytest.mark.parametrize("kind", ["predict", "score"])
def test_openapi_documents_each_models_schema_and_fixture(user_server: httpx.Client, kind: str) -> None:
    spec = user_server.get("/openapi.json").json()
    model_schema = user_server.get(f"/models/iris/schemas/{kind}").json()

    media = spec["paths"][f"/models/iris/{kind}"]["post"]["requestBody"]["content"]["application/json"]
    assert media["schema"] == model_schema
    assert media["example"] == read_json(IRIS_DATA / "fixtures" / f"{kind}.json")
    assert "/models/iris/versions/1/predict" in spec["paths"]
    assert "/models/demo-model/predict" in spec["paths"]


# -- errors over HTTP --------------------------------------------------------------


def test_payload_failing_the_schema_is_422_with_pointer_paths(user_server: httpx.Client) -> None:
    response = user_server.post("/models/iris/predict", json=[[5.1, "wide", 1.4, 0.2], [1.0, 2.0]])

    body = assert_clean_error(response, 422)
    paths = {detail["path"] for detail in body["details"]}
    assert paths == {"/0/1", "/1"}
    assert all(detail["message"] for detail in body["details"])


def test_malformed_json_is_400(user_server: httpx.Client) -> None:
    response = user_server.post(
        "/models/iris/predict", content=b"[[5.1, 3.5,", headers={"content-type": "application/json"}
    )

    assert_clean_error(response, 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models/nope"),
        ("POST", "/models/nope/predict"),
        ("GET", "/models/iris/versions/99"),
        ("POST", "/models/iris/versions/99/predict"),
        ("GET", "/models/iris/versions/99/schemas/predict"),
    ],
)
def test_unknown_model_or_version_is_404(user_server: httpx.Client, method: str, path: str) -> None:
    response = user_server.request(method, path, json=[SETOSA] if method == "POST" else None)

    assert_clean_error(response, 404)


# -- the original ml-py-stevedore routes ---------------------------------------------


@pytest.fixture(params=["", "/"], ids=["no-slash", "slash"])
def slash(request: pytest.FixtureRequest) -> str:
    suffix: str = request.param
    return suffix


def test_compat_health(user_server: httpx.Client, slash: str) -> None:
    live = user_server.get("/health/live" + slash)
    ready = user_server.get("/health/ready" + slash, params={"model": "iris"})
    all_ready = user_server.get("/health/ready" + slash)
    health = user_server.get("/health" + slash)
    uptime = user_server.get("/health/uptime" + slash)

    assert (live.status_code, live.json()) == (200, "LIVE")
    assert (ready.status_code, ready.json()) == (200, "READY")
    assert (all_ready.status_code, all_ready.json()) == (200, "READY")
    report = health.json()
    assert report["live"] is True
    assert report["ready"] == {"iris": True, "iris-proba": True, "demo-model": True}
    assert isinstance(report["uptime"], float) and report["uptime"] > 0
    assert isinstance(uptime.json(), float) and uptime.json() > 0


def test_compat_catalogue(user_server: httpx.Client, slash: str) -> None:
    names = user_server.get("/list" + slash).json()
    version = user_server.get("/version" + slash, params={"model": "iris"}).json()
    created = user_server.get("/creation_time" + slash, params={"model": "iris"}).json()
    predict_schema = user_server.get("/predict_schema" + slash, params={"model": "iris"}).json()
    score_schema = user_server.get("/score_schema" + slash, params={"model": "iris"}).json()

    assert sorted(names) == ["demo-model", "iris", "iris-proba"]
    assert version == "1"
    assert created == user_server.get("/models/iris").json()["created"]
    assert predict_schema == read_json(IRIS_DATA / "schemas" / "predict.json")
    assert score_schema == read_json(IRIS_DATA / "schemas" / "score.json")


def test_compat_predict_and_score(user_server: httpx.Client, slash: str) -> None:
    predicted = user_server.post("/predict" + slash, json={"predictor": "iris", "payload": [SETOSA]})
    scored = user_server.post("/score" + slash, json={"predictor": "iris", "payload": LABELLED_IRIS})

    assert (predicted.status_code, predicted.json()) == (200, [0])
    assert (scored.status_code, scored.json()) == (200, 1.0)


def test_compat_accepts_curls_default_content_type(user_server: httpx.Client) -> None:
    # `curl -d '...'` sends application/x-www-form-urlencoded; the original's users never set a header.
    body = json.dumps({"predictor": "iris", "payload": [SETOSA]})
    response = user_server.post("/predict", content=body, headers={"content-type": "application/x-www-form-urlencoded"})

    assert (response.status_code, response.json()) == (200, [0])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/version?model=nope", None),
        ("GET", "/creation_time?model=nope", None),
        ("GET", "/predict_schema?model=nope", None),
        ("GET", "/health/ready?model=nope", None),
        ("POST", "/predict", {"predictor": "nope", "payload": [SETOSA]}),
        ("POST", "/score", {"predictor": "nope", "payload": LABELLED_IRIS}),
    ],
)
def test_compat_unknown_model_is_400(
    user_server: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = user_server.request(method, path, json=body)

    assert assert_clean_error(response, 400)["error"].startswith("Model nope not found (models: ")
