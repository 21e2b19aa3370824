"""``stevedore-server ray`` on a real Ray cluster (a head and one worker on this machine), for what issue 28 adds:

- the lazy models served by one multiplexed deployment, each replica holding at most ``max_models_per_replica``
  of them (four constant models, two held at once; each answers its own constant);
- a training run in a Ray actor with the resources its model asks (a custom resource only the worker node has),
  its log in the jobs store, and the version it made served by a deployment of its own, on that node, and again
  once the application is deployed again.

The trainer test plugin is not in the Ray tier's environment (its models would be deployed by every other Ray
test): it is installed into a directory of its own, on every node's ``PYTHONPATH``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .headstart import HeadStart
from .raycluster import RAY_VENV, RayCluster
from .venvs import INSTALLED, Venv, build_wheels, copy_source, free_port, offline_env, run_command, uv_cache

pytestmark = pytest.mark.ray

#: Lazy models (each a scikit-learn model file answering its own constant), and how many a replica holds.
CONSTANTS = 4
HELD = 2
#: The custom resource only the worker node has: the trainer's replicas, its trainings and trained versions.
RESOURCE = "trainer"
SETOSA = [5.1, 3.5, 1.4, 0.2]
#: Seconds for the application to deploy; for a training to end (its version deployed).
DEPLOY_TIMEOUT = 300
JOB_TIMEOUT = 240

#: Makes the constant models: ``const-K`` always answers K.
MAKE_CONSTANTS = """
import sys, joblib, numpy as np
from sklearn.dummy import DummyClassifier
features, labels = np.zeros((4, 4)), np.array([0, 1, 2, 3])
for k in range(int(sys.argv[2])):
    model = DummyClassifier(strategy="constant", constant=k).fit(features, labels)
    joblib.dump(model, f"{sys.argv[1]}/const-{k}.joblib")
"""


#: The Serve applications running (a question to the cluster).
APPLICATIONS = "from ray import serve\nimport json\nprint(json.dumps(sorted(serve.status().applications)))"


def settings(models: Path) -> str:
    constants = "".join(
        f"""
[models.const-{k}]
uri = "{models / f"const-{k}.joblib"}"
trust = true
load = "lazy"
ray_actor_options = {{num_cpus = 0.25}}
"""
        for k in range(CONSTANTS)
    )
    return f"""
load_models = ["iris-trainer", "misbehaving-trainer"]
max_models_per_replica = {HELD}
job_grace_period = 2

[models.iris-trainer]
ray_actor_options = {{num_cpus = 0.25, resources = {{{RESOURCE} = 1}}}}

[models.misbehaving-trainer]
ray_actor_options = {{num_cpus = 0.1}}

[models.failing]
load = "lazy"
ray_actor_options = {{num_cpus = 0.1}}
{constants}"""


@pytest.fixture(scope="module")
def ray_venv(head_start: HeadStart) -> Venv:
    environment: Venv = head_start.result(RAY_VENV)
    return environment


@pytest.fixture(scope="module")
def trainer_site(head_start: HeadStart, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the trainer test plugin (installed there, its dependencies the Ray environment's)."""
    root = Path(tmp_path_factory.mktemp("trainer"))
    wheels = build_wheels([copy_source(INSTALLED / "trainer", root / "trainer")], root / "wheels",
                          head_start.result("wheelhouse"))  # fmt: skip
    site = root / "site"
    command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
               str(site), "--cache-dir", str(uv_cache()), *map(str, wheels)]  # fmt: skip
    run_command(command, env=offline_env())
    return site


@pytest.fixture(scope="module")
def constant_models(ray_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = Path(tmp_path_factory.mktemp("constants"))
    ray_venv.run("python", "-c", MAKE_CONSTANTS, str(directory), str(CONSTANTS))
    return directory


@pytest.fixture(scope="module")
def cluster(ray_venv: Venv, trainer_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A head, and a worker with the custom resource ``trainer``."""
    running = RayCluster(ray_venv, Path(tmp_path_factory.mktemp("jobs-cluster")), {"PYTHONPATH": str(trainer_site)})
    try:
        running.start(workers=0)
        running.add_worker("--resources", json.dumps({RESOURCE: 4}))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ray_command(cluster: RayCluster, constant_models: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The ``stevedore-server ray`` command of these tests (on loopback, at a free port)."""
    path = tmp_path_factory.mktemp("jobs-settings") / "models.toml"
    path.write_text(settings(constant_models))
    state = tmp_path_factory.mktemp("jobs-state")
    return [
        str(cluster.environment.bin / "stevedore-server"), "ray", "--address", cluster.address,
        "--host", "127.0.0.1", "--port", str(free_port()), "--config", str(path), "--state-dir", str(state),
    ]  # fmt: skip


def deploy(cluster: RayCluster, command: list[str]) -> None:
    result = run_command(command, env=cluster.env(), timeout=DEPLOY_TIMEOUT, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def ray_url(cluster: RayCluster, ray_command: list[str]) -> str:
    deploy(cluster, ray_command)
    return f"http://127.0.0.1:{ray_command[ray_command.index('--port') + 1]}"


def holding(cluster: RayCluster) -> dict[str, Any]:
    """What the multiplexed deployment's replica holds (it has one)."""
    code = (
        "from ray import serve\n"
        "import json\n"
        "handle = serve.get_deployment_handle('stevedore-multiplexed', app_name='stevedore')\n"
        "print(json.dumps(handle.holding.remote().result()))"
    )
    answer: dict[str, Any] = json.loads(cluster.python(code))
    return answer


def states(ray_url: str) -> dict[str, tuple[str, str]]:
    index = httpx.post(f"{ray_url}/v2/repository/index", json={}).json()
    return {entry["name"]: (entry["state"], entry.get("reason", "")) for entry in index}


def test_lazy_models_are_served_by_one_multiplexed_deployment_each_replica_holding_at_most_its_share(
    ray_url: str, cluster: RayCluster
) -> None:
    names = [f"const-{k}" for k in range(CONSTANTS)]
    before = states(ray_url)
    assert all(before[name] == ("UNAVAILABLE", "not loaded yet") for name in names), before
    assert holding(cluster)["models"] == []
    failing = httpx.post(f"{ray_url}/models/failing/predict", json=[1.0], timeout=60)
    assert failing.status_code == 503 and "divides by zero" in failing.text, failing.text
    again = httpx.post(f"{ray_url}/models/failing/predict", json=[1.0], timeout=60)  # within its back-off
    assert again.status_code == 503 and again.json() == failing.json() and "retry-after" in again.headers
    assert holding(cluster)["models"] == [] and holding(cluster)["loads"] == 1  # tried once, not held
    loads = 1
    for round_ in range(2):  # the second round finds none of the first two held: each is loaded again
        for k, name in enumerate(names):
            response = httpx.post(f"{ray_url}/models/{name}/predict", json=[SETOSA, SETOSA], timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == [k, k], (round_, name, response.json())
            loads += 1
            held = holding(cluster)
            assert len(held["models"]) <= HELD and f"{name}:1" in held["models"], held
            assert held["loads"] == loads, held
            again = httpx.post(f"{ray_url}/models/{name}/predict", json=[SETOSA], timeout=60)
            assert again.json()["predictions"] == [k] and again.headers["x-served-by"] == held["replica"]
            assert holding(cluster)["loads"] == loads  # held: served, not loaded again
    assert holding(cluster)["exports"] == 1  # of the replica's held models; none left behind by unloaded ones
    assert all(state == "READY" for state, _ in (states(ray_url)[name] for name in names))


def node_with_resource(cluster: RayCluster) -> str:
    code = f"print(next(node['NodeID'] for node in ray.nodes() if {RESOURCE!r} in node['Resources']))"
    return cluster.python(code).strip()


def wait_for_job(ray_url: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job: dict[str, Any] = httpx.get(f"{ray_url}/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {JOB_TIMEOUT} s"
        time.sleep(0.5)


def test_a_training_runs_on_the_node_with_its_resources_and_its_version_is_served_by_a_deployment_of_its_own(
    ray_url: str, cluster: RayCluster, ray_command: list[str]
) -> None:
    worker = node_with_resource(cluster)  # the one node with the resource the training asks (the ingress: any)
    response = httpx.post(f"{ray_url}/models/iris-trainer/train", json={"C": 0.5, "max_iter": 200})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    done = wait_for_job(ray_url, job_id)
    lines = [line["line"] for line in httpx.get(f"{ray_url}/jobs/{job_id}/logs").json()["lines"]]
    assert done["state"] == "succeeded", (done, lines)
    assert f"stevedore.job: running on Ray node {worker}" in lines, lines
    assert any("training accuracy" in line for line in lines), lines
    version = done["result"]["served_version"]
    assert version == "1+job." + job_id.split("-")[0] and done["result"]["accuracy"] > 0.9, done
    answer = httpx.post(f"{ray_url}/models/iris-trainer/versions/{version}/predict", json=[SETOSA], timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [0] and answer.json()["model_version"] == version
    assert answer.headers["x-served-by"].split("/")[0] == worker
    entry = httpx.get(f"{ray_url}/models/iris-trainer").json()
    assert version in entry["versions"] and entry["metadata"]["trained_by_job"] == job_id, entry
    application = f"stevedore.iris-trainer:{version}"  # its own, beside the application's deployments
    assert application in applications(cluster)
    deploy(cluster, ray_command)  # again: the new ingress deploys the trained version again, and it stays
    assert application in applications(cluster)
    again = httpx.post(f"{ray_url}/models/iris-trainer/versions/{version}/predict", json=[SETOSA], timeout=60)
    assert again.status_code == 200 and again.json()["model_version"] == version, again.text
    assert httpx.delete(f"{ray_url}/models/iris-trainer/versions/{version}").status_code == 204
    gone = httpx.post(f"{ray_url}/models/iris-trainer/versions/{version}/predict", json=[SETOSA])
    assert gone.status_code == 404 and application not in applications(cluster)


def applications(cluster: RayCluster) -> list[str]:
    listed: list[str] = json.loads(cluster.python(APPLICATIONS))
    return listed


def job_lines(ray_url: str, job_id: str) -> list[str]:
    return [line["line"] for line in httpx.get(f"{ray_url}/jobs/{job_id}/logs").json()["lines"]]


def test_a_training_on_ray_is_cancelled_through_its_actor_and_one_whose_actor_dies_fails(ray_url: str) -> None:
    hanging = httpx.post(f"{ray_url}/models/misbehaving-trainer/train", json={"mode": "hang"}).json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while httpx.get(f"{ray_url}/jobs/{hanging}").json()["progress"] < 0.5:  # hanging in its actor
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert httpx.delete(f"{ray_url}/jobs/{hanging}").status_code == 202
    cancelled = wait_for_job(ray_url, hanging)
    assert cancelled["state"] == "cancelled", cancelled
    assert "stevedore.job: cancelled, stopping" in job_lines(ray_url, hanging)  # asked, not killed
    aborted = httpx.post(f"{ray_url}/models/misbehaving-trainer/train", json={"mode": "abort"}).json()["id"]
    died = wait_for_job(ray_url, aborted)
    assert died["state"] == "failed" and died["error"].startswith("its Ray actor died: "), died
    failing = httpx.post(f"{ray_url}/models/misbehaving-trainer/train", json={"mode": "raise"}).json()["id"]
    failed = wait_for_job(ray_url, failing)
    assert failed["state"] == "failed" and failed["error"] == "ValueError: the data is bad", failed
