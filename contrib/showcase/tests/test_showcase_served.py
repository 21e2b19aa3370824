"""The installed showcase served: its models pass the self-test, its stream streams, its routes answer as declared."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stevedore_server.kit.loopback import LiveServer

PACKAGE = Path(__file__).resolve().parents[1] / "stevedore_showcase"


def test_the_server_serves_both_models_from_the_wheel(showcase_server: LiveServer) -> None:
    catalogue = httpx.get(f"{showcase_server.url}/models").json()
    assert [(model["name"], model["state"]) for model in catalogue["models"]] == [
        ("countdown", "ready"),
        ("next-day", "ready"),
    ]
    assert {model["metadata"]["distribution"] for model in catalogue["models"]} == {"stevedore-showcase"}
    assert catalogue["failed_plugins"] == []


def test_the_countdown_schema_is_the_package_data_file(showcase_server: LiveServer) -> None:
    schema = httpx.get(f"{showcase_server.url}/models/countdown/schemas/predict").json()
    assert schema == json.loads((PACKAGE / "schemas" / "countdown.json").read_text())
    assert httpx.post(f"{showcase_server.url}/models/countdown/predict", json=[101]).status_code == 422


def test_check_passes(showcase_env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "stevedore_server", "check", "--plugins", "stevedore-showcase"]
    result = subprocess.run(command, env=showcase_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "countdown" in result.stdout and "next-day" in result.stdout


def test_the_countdown_streams_a_count_at_a_time(showcase_server: LiveServer) -> None:
    arrivals: list[float] = []
    url = f"{showcase_server.url}/models/countdown/predict/stream"
    with httpx.stream("POST", url, json=[3], timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5  # 3, 2, 1, 0 and the end
    assert arrivals[-1] - arrivals[0] > 0.2  # the counts came as they were made, not all at the end


def test_the_feedback_route_answers_201(showcase_server: LiveServer) -> None:
    answer = httpx.post(f"{showcase_server.url}/plugins/stevedore-showcase/feedback", json={"label": 2})
    assert answer.status_code == 201 and answer.json() == {"received": {"label": 2}}


def test_the_routes_are_in_the_openapi_document(showcase_server: LiveServer) -> None:
    paths = httpx.get(f"{showcase_server.url}/openapi.json").json()["paths"]
    assert "/models/next-day/example" in paths and "/plugins/stevedore-showcase/feedback" in paths


def test_the_plugin_kits_check_passes_each_model(
    showcase_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pytest in the plugin's folder, as its author runs it: stevedore-server's pytest plugin checks each model
    alone, and a route under the other model fails neither."""
    project = tmp_path_factory.mktemp("author") / "showcase"
    shutil.copytree(PACKAGE.parent, project, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"]
    result = subprocess.run(command, cwd=project, env=showcase_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED pyproject.toml::stevedore[countdown 1]" in result.stdout
    assert "PASSED pyproject.toml::stevedore[next-day 1]" in result.stdout
