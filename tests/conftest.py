"""Fixtures, and the test tiers: each test is marked with the tier it needs (see ``pyproject.toml``'s
markers), and a tier whose tools this machine lacks is skipped with the reason, except under ``CI``, where
``make test`` has installed them and a missing one is a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.chrome.webdriver import WebDriver

from stevedore_server.base.settings import Settings
from stevedore_server.frontends.app import ServingProcess, create_app

from .browser import SCREENSHOTS, chromium
from .containers import EXAMPLE_IMAGE, build_example_image, remove_image
from .headstart import HeadStart
from .helpers import Registers, fresh_manager
from .predictors import RowSum
from .raycluster import RAY_VENV, make_ray_venv
from .venvs import (
    CONTRIB,
    INSTALLED,
    REPO,
    Server,
    Venv,
    build_wheelhouse,
    copy_source,
    example_server_at,
    plugins_venv,
)

#: The tiers, slowest last. A test with none of these markers is a unit test (in process).
TIERS = ("unit", "server", "venv", "container", "browser", "soak", "ray")
#: Fixtures that make a test a server test (a real ``stevedore-server run`` over loopback), and a venv test.
SERVER_FIXTURES = {"example_server", "ops_venv"}
VENV_FIXTURES = {"wheelhouse"}
#: Commands each tier needs; ``make test`` installs them (Debian packages).
TIER_TOOLS = {"container": ("podman", "buildah", "debootstrap"), "browser": ("chromium", "chromedriver")}
#: The wheelhouse among the setups of the session's head start.
WHEELHOUSE = "wheelhouse"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.server)
        if VENV_FIXTURES & fixtures:
            item.add_marker(pytest.mark.venv)
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(pytest.mark.unit)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Where the browser tests' screenshots are (artifacts of the run, not committed)."""
    if SCREENSHOTS:
        terminalreporter.section("screenshots")
        for path in SCREENSHOTS:
            terminalreporter.write_line(str(path))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for tier, tools in TIER_TOOLS.items():
        missing = [tool for tool in tools if item.get_closest_marker(tier) and shutil.which(tool) is None]
        if not missing:
            continue
        reason = f"{tier} tests need {', '.join(missing)}: `make test` installs them"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, yet CI is missing them", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Start an app (lifespan included) serving the given plugins; stopped after the test."""
    clients: list[TestClient] = []

    def start(*plugins: object, settings: Settings | None = None, process: ServingProcess | None = None) -> TestClient:
        app = create_app(settings or Settings(), fresh_manager(*plugins), process=process or ServingProcess())
        # localhost: TestClient's own "testserver" is no host a loopback-bound server allows (web.origins)
        client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def trainers(monkeypatch: pytest.MonkeyPatch) -> Registers:
    """The trainer test plugin's trainable and misbehaving models, registered in process (the spawned job
    processes find the plugin on the same ``sys.path``)."""
    monkeypatch.syspath_prepend(str(INSTALLED / "trainer"))
    from stevedore_test_trainer import IrisTrainer, MisbehavingTrainer

    return Registers(IrisTrainer(), MisbehavingTrainer())


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A server with one healthy model, ``rowsum``."""
    return make_client(Registers(RowSum()))


def make_wheelhouse(root: Path) -> Path:
    """Wheels of the core, the example plugin and every dependency."""
    sources = [copy_source(REPO, root / "src" / "core"), copy_source(CONTRIB, root / "src" / "sklearn_logreg")]
    # The scikit-learn runtime, which the example image has too (it serves KServe's /mnt/models).
    sources.append(copy_source(REPO / "plugins" / "sklearn", root / "src" / "runtime_sklearn"))
    # setuptools for the isolated builds of plugins, pytest for the generated plugin's tests, psycopg for the
    # core's postgres extra, pip for the test venvs (``Venv.create``).
    return build_wheelhouse(root / "wheels", sources, ["setuptools>=77", "pytest", "psycopg[binary]>=3.1", "pip"])


@pytest.fixture(scope="session", autouse=True)
def head_start(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadStart]:
    """The slow setups of the tiers this session runs, started on a thread of their own before its first test
    (``headstart.py``): the wheelhouse, then the container tier's image, then the Ray tier's environment."""
    tiers = {mark.name for item in request.session.items for mark in item.iter_markers()}
    started = HeadStart()
    request.config.pluginmanager.register(started, "head start")  # a failed setup's error shown once
    if tiers & {"venv", "container", "ray"}:
        wheelhouse_root = tmp_path_factory.mktemp("wheelhouse")
        started.submit(WHEELHOUSE, lambda: make_wheelhouse(wheelhouse_root))
        if "container" in tiers and all(shutil.which(tool) for tool in TIER_TOOLS["container"]):
            image_root = tmp_path_factory.mktemp("example-image")
            started.submit(
                EXAMPLE_IMAGE,
                lambda: build_example_image(image_root, started.result(WHEELHOUSE)),
                cleanup=lambda built: remove_image(built.tag),
            )
        if "ray" in tiers:
            ray_root = tmp_path_factory.mktemp("ray-venv")
            started.submit(RAY_VENV, lambda: make_ray_venv(ray_root, started.result(WHEELHOUSE)))
    try:
        yield started
    finally:
        started.close()
        request.config.pluginmanager.unregister(started)


@pytest.fixture(scope="session")
def wheelhouse(head_start: HeadStart) -> Path:
    """Wheels of the core, the example plugin and every dependency, built once per session, ahead (a test that
    uses them is a venv test: ``pytest_collection_modifyitems``)."""
    built: Path = head_start.result(WHEELHOUSE)
    return built


@pytest.fixture(scope="session")
def trainer_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The core (with its postgres extra) and the trainer test plugin, installed from wheels."""
    requirements = ["stevedore-server[postgres]", "stevedore-test-trainer"]
    return plugins_venv(tmp_path_factory.mktemp("trainer"), wheelhouse, ["trainer"], requirements)


@pytest.fixture(scope="session")
def ops_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The core, the example plugin and the sleeper and tensors test plugins, installed from wheels."""
    requirements = ["stevedore-server", "stevedore-sklearn-logreg", "stevedore-test-sleeper", "stevedore-test-tensors"]
    return plugins_venv(tmp_path_factory.mktemp("ops"), wheelhouse, ["sleeper", "tensors"], requirements)


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the environment running the tests, serving the example plugin
    (``make test`` installs it), on a free loopback port; stopped by its pid at the end of the session."""
    with example_server_at(tmp_path_factory.mktemp("example-server") / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium (Debian's, driven by Selenium), one for a module's tests."""
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as session:
        yield session
