"""``stevedore-server ray`` with secrets, on a real one-node Ray cluster: the API keys reach the ingress, which
asks for them, through a file only its user can read; they are nowhere in what Ray shows of the ingress (its
actor's state, ``runtime_env`` included) nor in the ingress's process environment, which every process it
starts would inherit. The rest of the application on Ray: ``test_ray.py``."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .headstart import HeadStart
from .raycluster import RAY_VENV, RayCluster
from .venvs import Venv, free_port

pytestmark = pytest.mark.ray

API_KEY = "a-ray-key-nobody-else-sees"
DATABASE_URL = "sqlite:////tmp/stevedore-ray-secrets-test/jobs-with-a-secret-name.db"
DEPLOY_TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster(head_start: HeadStart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    environment: Venv = head_start.result(RAY_VENV)
    running = RayCluster(environment, Path(tmp_path_factory.mktemp("secrets-cluster")))
    try:
        running.start(workers=0)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("ray-state"))


@pytest.fixture(scope="module")
def ray_url(cluster: RayCluster, state_dir: Path) -> str:
    """The application deployed with an API key and a database URL in the command's environment, no models."""
    port = free_port()
    command = [
        str(cluster.environment.bin / "stevedore-server"), "ray", "--address", cluster.address,
        "--host", "127.0.0.1", "--port", str(port), "--load-models", "none",
    ]  # fmt: skip
    env = cluster.env(
        STEVEDORE_API_KEYS=API_KEY, STEVEDORE_DATABASE_URL=DATABASE_URL, STEVEDORE_STATE_DIR=str(state_dir)
    )
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return f"http://127.0.0.1:{port}"


def test_the_ingress_asks_for_the_key_it_read_from_its_file(ray_url: str, state_dir: Path) -> None:
    # The probes need no key (readiness depends on the test plugins' health checks, not on keys).
    assert httpx.get(ray_url + "/livez", timeout=30).status_code == 200
    assert httpx.get(ray_url + "/readyz", timeout=30).status_code in (200, 503)
    assert httpx.get(ray_url + "/models", timeout=30).status_code == 401
    answer = httpx.get(ray_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    (secrets,) = (state_dir / "ray").iterdir()
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert json.loads(secrets.read_text()) == {"STEVEDORE_API_KEYS": API_KEY, "STEVEDORE_DATABASE_URL": DATABASE_URL}


def test_the_secrets_are_neither_in_what_ray_shows_nor_in_the_ingress_environment(
    ray_url: str, cluster: RayCluster
) -> None:
    code = (
        "from ray.util.state import list_actors\n"
        "for actor in list_actors(filters=[('state', '=', 'ALIVE')], detail=True):\n"
        "    if actor.class_name.endswith(':Ingress'):\n"
        "        print(actor.pid, repr(actor))"
    )
    (line,) = cluster.python(code).strip().splitlines()
    pid, shown = line.split(" ", 1)
    assert b"Ingress" in Path(f"/proc/{pid}/cmdline").read_bytes()  # Ray names its worker after the actor
    environment = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    for secret in (API_KEY, DATABASE_URL):
        assert secret not in shown
        assert secret not in environment
