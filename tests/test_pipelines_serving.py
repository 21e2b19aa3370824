"""Pipelines as a user serves them: from a plugin's wheel installed in a fresh environment, with ``--workers 2``,
and what stops the server (``--strict``, a table of the wrong shape)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from .pipelines_server import start
from .venvs import Server, Venv, plugins_venv, ready_server

IRIS = [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2]]
ISSUE = """
[pipelines.iris-sum]
type = "sequence"
steps = [{ model = "iris-proba" }, { model = "hooked-sum", data = "$response" }]
"""
BROKEN = (
    ISSUE
    + """
[pipelines.cycle]
root = "a"
[pipelines.cycle.nodes.a]
type = "sequence"
steps = [{ node = "a" }]
"""
)


def exited(server: Server, deadline: float = 60.0) -> int:
    return server.process.wait(deadline)


@pytest.mark.server
def test_strict_stops_on_a_failed_pipeline(tmp_path: Path) -> None:
    server = start(tmp_path, BROKEN, "--strict")
    try:
        assert exited(server) != 0
    finally:
        server.stop()
    assert "--strict: not every pipeline is ready" in server.log()
    assert "pipeline 'cycle' failed: its nodes form a cycle: a -> a" in server.log()


@pytest.mark.server
def test_a_table_of_the_wrong_shape_stops_the_server(tmp_path: Path) -> None:
    server = start(tmp_path, '[pipelines.p]\ntype = "sequence"\nsteps = [{ model = "iris", weight = 2 }]\n')
    try:
        assert exited(server) != 0
    finally:
        server.stop()
    assert "setting pipelines.p.steps[0].weight" in server.log()
    assert "only a splitter's steps have a weight" in server.log()
    assert "Traceback" not in server.log()


@pytest.mark.server
def test_both_workers_serve_the_pipelines(tmp_path: Path) -> None:
    server = start(tmp_path, BROKEN, "--workers", "2")
    try:
        server.wait_for("/readyz")
        for _ in range(40):
            response = httpx.post(f"{server.url}/pipelines/iris-sum/predict", json=IRIS, timeout=30)
            assert response.status_code == 200, response.text
            assert all(math.isclose(total, 1.0) for total in response.json()["predictions"])
            listed = httpx.get(f"{server.url}/pipelines", timeout=30).json()["pipelines"]
            assert {entry["name"]: entry["state"] for entry in listed} == {
                "iris-sum": "ready", "cycle": "failed", "shipped-sum": "ready"
            }  # fmt: skip
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'stevedore_pipeline_requests_total{outcome="ok",pipeline="iris-sum"} 40.0' in metrics
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pipeline_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The core, the example plugin and the pipeline test plugin, installed from wheels."""
    requirements = ["stevedore-server", "stevedore-sklearn-logreg", "stevedore-test-pipeline"]
    return plugins_venv(tmp_path_factory.mktemp("pipeline-wheel"), wheelhouse, ["pipeline"], requirements)


def test_a_pipeline_shipped_by_a_plugin_wheel(pipeline_venv: Venv, tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(ISSUE)
    server = ready_server(pipeline_venv, tmp_path / "server.log", "--config", str(config))
    try:
        listed = {entry["name"]: entry for entry in httpx.get(f"{server.url}/pipelines").json()["pipelines"]}
        assert listed["shipped-sum"]["state"] == "ready"
        assert listed["shipped-sum"]["source"] == (
            "entry point 'shipped' (stevedore.pipelines) of stevedore-test-pipeline 0.1.0"
        )
        answer = httpx.post(f"{server.url}/pipelines/shipped-sum/predict", json=[[1, 2], [3, 5]]).json()
        assert answer["predictions"] == [5, 13]
        sums = httpx.post(f"{server.url}/pipelines/iris-sum/predict", json=IRIS).json()["predictions"]
        assert all(math.isclose(total, 1.0) for total in sums)
    finally:
        server.stop()
