from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pluggy
import pytest
from fastapi.testclient import TestClient

from stevedore_server.app import create_app
from stevedore_server.plugins import get_plugin_manager
from stevedore_server.settings import Settings

from .predictors import RowSum
from .venvs import CONTRIB, REPO, Server, Venv, build_wheelhouse, copy_source


class Registers:
    """A test plugin contributing the given predictors through the registration hook."""

    def __init__(self, *predictors: object) -> None:
        self.predictors = predictors

    @pluggy.HookimplMarker("stevedore")
    def stevedore_register_predictors(self, register: Callable[[object], None]) -> None:
        for predictor in self.predictors:
            register(predictor)


def fresh_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with only the given plugins: no entry points of the machine."""
    manager, failures = get_plugin_manager(load_entry_points=False)
    assert failures == []
    for plugin in plugins:
        manager.register(plugin)
    return manager


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Start an app (lifespan included) serving the given plugins; stopped after the test."""
    clients: list[TestClient] = []

    def start(*plugins: object, settings: Settings | None = None) -> TestClient:
        client = TestClient(create_app(settings or Settings(), fresh_manager(*plugins)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A server with one healthy model, ``rowsum``."""
    return make_client(Registers(RowSum()))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the core, the example plugin and every dependency, built once per session."""
    root = tmp_path_factory.mktemp("wheelhouse")
    sources = [copy_source(REPO, root / "src" / "core"), copy_source(CONTRIB, root / "src" / "sklearn_logreg")]
    # setuptools for the isolated builds of plugins, pytest for the generated plugin's tests.
    return build_wheelhouse(root / "wheels", sources, ["setuptools>=77", "pytest"])


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the environment running the tests, serving the example plugin
    (``make test`` installs it), on a free loopback port; stopped by its pid at the end of the session."""
    log = tmp_path_factory.mktemp("example-server") / "server.log"
    running = Server.start(Venv(Path(sys.prefix), ()), log, "--plugins", "stevedore-sklearn-logreg")
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()
