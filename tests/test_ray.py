"""``stevedore-server ray`` on a real Ray cluster of three nodes on this machine (a head and two workers, one
CPU each), from a virtual environment of its own with ``stevedore-server[ray]`` and the plugins: the documentation's
commands, its curl tour and client example answered as ``stevedore-server run`` answers them, replicas on two
nodes, autoscaling from one replica to two and back, and recovery from a node killed.

The tests run in order on one cluster and one application; the node is killed last.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from .documentation import between, block, page
from .headstart import HeadStart
from .helpers import wait_until
from .raycluster import RAY_VENV, RayCluster
from .test_readme_clients import EXAMPLES, run_example
from .venvs import REPO, Server, Venv, free_port

pytestmark = pytest.mark.ray

RAY_COMMANDS = between("ray-commands", page("deployment/ray.md"))
#: The curl tour and the V2 curl example, each command on one line.
TOUR = block("sh", "localhost:8000/readyz", page("quickstart.md"))
V2_CURL = block("sh", "/v2/models/iris/infer", page("protocols/v2-rest.md"))

#: The example plugin's model file, also served with no code by the scikit-learn runtime (a skops file).
MODEL_FILE = REPO / "contrib" / "sklearn_logreg" / "stevedore_sklearn_logreg" / "model.skops"
#: Each model's deployment options; small CPU shares so that everything fits on three one-CPU nodes.
SETTINGS = f"""
[models.iris-file]
uri = "{MODEL_FILE}"
ray_actor_options = {{num_cpus = 0.1}}

[models.iris]
replicas = 2
max_replicas_per_node = 1
ray_actor_options = {{num_cpus = 0.25}}

[models.iris-proba]
ray_actor_options = {{num_cpus = 0.25}}

[models.failing]
ray_actor_options = {{num_cpus = 0.1}}

[pipelines.iris-both]
description = "iris-proba's probabilities, then iris's labels of the same rows: two deployments in one call"
type = "sequence"
steps = [{{ model = "iris-proba" }}, {{ model = "iris", data = "$request" }}]

[models.sleeper]
min_replicas = 1
max_replicas = 2
target_ongoing_requests = 1
upscale_delay = 1
downscale_delay = 3
ray_actor_options = {{num_cpus = 0.25}}
"""
SETOSA = [5.1, 3.5, 1.4, 0.2]
V2_SETOSA = {"name": "input-1", "datatype": "FP64", "shape": [1, 4], "data": SETOSA}
#: Seconds for the application to deploy, for a deployment to scale, for requests to succeed after a node dies.
DEPLOY_TIMEOUT = 300
SCALE_TIMEOUT = 120
RECOVERY_TIMEOUT = 180


@pytest.fixture(scope="module")
def ray_venv(head_start: HeadStart) -> Venv:
    """The cluster's environment (``raycluster.make_ray_venv``), made ahead by the session."""
    environment: Venv = head_start.result(RAY_VENV)
    return environment


@pytest.fixture(scope="module")
def unhealthy_flag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """While this file exists, the sleeper plugin's health check fails."""
    return tmp_path_factory.mktemp("flags") / "disk-full"


@pytest.fixture(scope="module")
def cluster(ray_venv: Venv, unhealthy_flag: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    root = Path(tmp_path_factory.mktemp("cluster"))
    running = RayCluster(ray_venv, root, {"STEVEDORE_TEST_SLEEPER_UNHEALTHY": str(unhealthy_flag)})
    try:
        running.start(workers=2)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-settings") / "models.toml"
    path.write_text(SETTINGS)
    return path


def readme_command(
    prefix: str, cluster: RayCluster, settings: Path, port: int, output: Path | None = None
) -> list[str]:
    """The Ray page's command line starting with ``prefix``, for this cluster (loopback, a free port)."""
    line = next(line for line in RAY_COMMANDS.splitlines() if line.startswith(prefix))
    words = shlex.split(line.split("#")[0])
    replacements = {"HEAD:6379": cluster.address, "0.0.0.0": "127.0.0.1", "8000": str(port),
                    "models.toml": str(settings), "serve.yaml": str(output)}  # fmt: skip
    return [replacements.get(word, word) for word in words]


@pytest.fixture(scope="module")
def ray_url(cluster: RayCluster, settings_file: Path) -> str:
    """The Ray page's ``stevedore-server ray`` run against the cluster; the URL it serves."""
    port = free_port()
    command = readme_command("stevedore-server ray --address", cluster, settings_file, port)
    result = subprocess.run(
        [str(cluster.environment.bin / command[0]), *command[1:]],
        env=cluster.env(), capture_output=True, text=True, timeout=DEPLOY_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    url = f"http://127.0.0.1:{port}"
    assert url in result.stdout
    return url


@pytest.fixture(scope="module")
def standalone(ray_venv: Venv, settings_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``stevedore-server run`` of the same environment and settings: the answers to match."""
    server = Server.start(
        ray_venv, tmp_path_factory.mktemp("standalone") / "server.log", "--config", str(settings_file)
    )
    try:
        server.wait_for("/livez")
        server.wait_for("/models/iris/ready")
        yield server
    finally:
        server.stop()


def curl(command: str, url: str) -> subprocess.CompletedProcess[str]:
    line = command.split("  #")[0].replace("localhost:8000", url.removeprefix("http://"))
    return subprocess.run(["sh", "-c", line + " -w ' %{http_code}'"], capture_output=True, text=True, timeout=60)


def commands_of(block: str) -> list[str]:
    """The curl commands of a documentation block, each on one line (a line not starting one continues it)."""
    commands: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("curl"):
            commands.append(line)
        elif commands and line.strip() and not line.startswith("#"):
            commands[-1] += " " + line.strip()
    return commands


def served_by(response: httpx.Response) -> tuple[str, str]:
    node, replica = response.headers["x-served-by"].split("/")
    return node, replica


def without_times(text: str) -> str:
    """Uptime, and the time a model without an artifact or ``created`` was made (when it loaded), differ; and
    where a model runs (``runs_in``: a deployment on Ray, threads alone), which has a test of its own."""
    text = re.sub(r'"runs_in":\{[^}]*\}', '"runs_in":{...}', text)
    return re.sub(r'"created":"[^"]*"', '"created":"..."', re.sub(r'"uptime":[0-9.e-]+', '"uptime":0', text))


# -- the same answers as stevedore-server run --------------------------------------


def test_the_readme_curl_tour_answers_as_the_standalone_server(ray_url: str, standalone: Server) -> None:
    commands = commands_of(TOUR) + commands_of(V2_CURL)
    assert len(commands) >= 8
    for command in commands:
        through_ray, alone = curl(command, ray_url), curl(command, standalone.url)
        assert through_ray.returncode == 0, through_ray.stderr
        assert without_times(through_ray.stdout) == without_times(alone.stdout), command
    predicted = curl(commands_of(TOUR)[3], ray_url).stdout
    assert predicted == '{"model_name":"iris","model_version":"1","predictions":[0,2]} 200'
    # The catalogue says where each model runs: its deployment on Ray, the server's threads alone.
    assert httpx.get(ray_url + "/models/iris").json()["metadata"]["runs_in"] == {"kind": "ray", "deployment": "iris:1"}
    assert httpx.get(standalone.url + "/models/iris").json()["metadata"]["runs_in"]["kind"] == "threads"


def test_the_readme_tritonclient_example_answers_through_ray(ray_url: str) -> None:
    http_example = next(block for block in EXAMPLES if "tritonclient.http" in block)
    assert run_example(http_example, ray_url) >= 1


def test_every_route_answers_as_the_standalone_server(ray_url: str, standalone: Server) -> None:
    """Beyond the tour: V2 metadata and readiness, binary tensors, the original routes, docs, errors."""
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/v2", None),
        ("GET", "/v2/health/ready", None),
        ("GET", "/v2/models/iris", None),
        ("GET", "/v2/models/iris/versions/1/ready", None),
        ("GET", "/v2/models/failing/ready", None),
        ("POST", "/v2/repository/index", {}),
        ("GET", "/models/iris", None),
        ("GET", "/models/sleeper/schemas/predict", None),
        ("GET", "/models/nope", None),
        ("POST", "/models/failing/predict", [1.0]),
        ("POST", "/models/iris/predict", b"[[1, 2"),
        ("GET", "/predictors", None),
        ("POST", "/predict", {"predictor": "iris", "payload": [SETOSA]}),
        ("GET", "/docs", None),
        # A model file through its runtime: the stevedore route, and V2 with an output chosen by name.
        ("POST", "/models/iris-file/predict", [SETOSA]),
        ("GET", "/v2/models/iris-file", None),
        ("POST", "/v2/models/iris-file/infer", {"inputs": [V2_SETOSA], "outputs": [{"name": "predict_proba"}]}),
        ("POST", "/v2/models/iris-file/infer", {"inputs": [V2_SETOSA]}),
    ]
    for method, path, body in requests:
        content = body if isinstance(body, bytes) else None
        answers = [
            httpx.request(method, base + path, json=None if content else body, content=content, timeout=30)
            for base in (ray_url, standalone.url)
        ]
        assert answers[0].status_code == answers[1].status_code, path
        assert without_times(answers[0].text) == without_times(answers[1].text), path
    # Binary tensors (the tritonclient's default for outputs too).
    header = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","parameters":{"binary_data_size":32}}]}'
    body = header + np.array([SETOSA]).tobytes()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    binary = [
        httpx.post(base + "/v2/models/iris/infer", content=body, headers=headers) for base in (ray_url, standalone.url)
    ]
    assert binary[0].status_code == 200 and binary[0].content == binary[1].content
    openapi = [httpx.get(base + "/openapi.json").json() for base in (ray_url, standalone.url)]
    assert openapi[0] == openapi[1]
    assert "stevedore_http_requests_total" in httpx.get(ray_url + "/metrics").text


def test_a_plugin_that_fails_to_import_gets_no_deployment_and_is_reported(ray_url: str, cluster: RayCluster) -> None:
    health = httpx.get(ray_url + "/healthz")
    assert health.status_code == 503
    report = health.json()
    assert [failure["distribution"] for failure in report["failed_plugins"]] == ["stevedore-test-broken"]
    states = {model["name"]: model["state"] for model in report["models"]}
    assert states == {
        "iris": "ready", "iris-proba": "ready", "iris-file": "ready", "sleeper": "ready", "failing": "failed"
    }  # fmt: skip
    assert "ZeroDivisionError" in next(m["reason"] for m in report["models"] if m["name"] == "failing")
    deployments = cluster.python(
        "from ray import serve\nprint(sorted(serve.status().applications['stevedore'].deployments))"
    )
    assert deployments.strip() == "['Ingress', 'failing:1', 'iris-file:1', 'iris-proba:1', 'iris:1', 'sleeper:1']"


def deployment_status(cluster: RayCluster, deployment: str) -> str:
    code = "from ray import serve\nstatus = serve.status().applications['stevedore'].deployments"
    return cluster.python(f"{code}\nprint(status[{deployment!r}].status.value)").strip()


def test_a_plugins_health_check_is_its_replicas_health_check(
    ray_url: str, cluster: RayCluster, unhealthy_flag: Path
) -> None:
    """The sleeper plugin's check fails while the flag file exists: Serve finds its replicas unhealthy (and
    replaces them), and /healthz says why; once it passes again the deployment is healthy.

    A plugin's check is every replica's check (a full disk is the node's), so every deployment's replicas are
    replaced meanwhile: the test ends once all of them are healthy again, for the tests after it."""
    assert httpx.get(ray_url + "/healthz").json()["checks"]["sleeper-disk"] == {"ok": True, "detail": "disk fine"}
    unhealthy_flag.touch()
    try:
        failing = {"ok": False, "detail": f"{unhealthy_flag} says the disk is full"}
        # The checks run at most once a second (a cached result is reused): the failure shows within about one.
        wait_until(
            lambda: httpx.get(ray_url + "/healthz").json()["checks"]["sleeper-disk"] == failing, "the failing check"
        )
        deadline = time.monotonic() + SCALE_TIMEOUT
        while (status := deployment_status(cluster, "sleeper:1")) != "UNHEALTHY":
            assert time.monotonic() < deadline, f"sleeper:1 is {status}, not UNHEALTHY, with its check failing"
            time.sleep(1)
    finally:
        unhealthy_flag.unlink()
    deadline = time.monotonic() + SCALE_TIMEOUT
    while (status := deployment_status(cluster, "sleeper:1")) != "HEALTHY":
        assert time.monotonic() < deadline, f"sleeper:1 is {status}, not HEALTHY again"
        time.sleep(1)
    assert httpx.post(ray_url + "/models/sleeper/predict", json=[0]).status_code == 200
    wait_until_every_deployment_is_healthy(cluster)


def deployment_states(cluster: RayCluster) -> dict[str, tuple[str, dict[str, int]]]:
    """Each deployment's status and its replicas by state, as ``serve.status()`` shows them."""
    code = (
        "import json\nfrom ray import serve\n"
        "deployments = serve.status().applications['stevedore'].deployments\n"
        "print(json.dumps({name: (d.status.value, d.replica_states) for name, d in deployments.items()}))"
    )
    states: dict[str, list[Any]] = json.loads(cluster.python(code))
    return {name: (status, replicas) for name, (status, replicas) in states.items()}


def wait_until_every_deployment_is_healthy(cluster: RayCluster) -> None:
    """Every deployment HEALTHY, with all its replicas RUNNING."""
    deadline = time.monotonic() + SCALE_TIMEOUT
    while True:
        states = deployment_states(cluster)
        if all(status == "HEALTHY" and set(replicas) == {"RUNNING"} for status, replicas in states.values()):
            return
        assert time.monotonic() < deadline, f"not every deployment is healthy: {states}"
        time.sleep(1)


# -- replicas on the nodes --------------------------------------------------------


def test_answers_come_from_replicas_on_two_nodes(ray_url: str, cluster: RayCluster) -> None:
    wait_for_replicas(cluster, "iris:1", 2, SCALE_TIMEOUT)
    nodes = set(cluster.python("print(' '.join(node['NodeID'] for node in ray.nodes() if node['Alive']))").split())
    # The ingress learns of a RUNNING replica shortly after Serve counts it: ask until both answered, or for 30 s.
    answers: list[httpx.Response] = []
    deadline = time.monotonic() + 30
    while len({served_by(a) for a in answers}) < 2 and time.monotonic() < deadline:
        answers += [httpx.post(ray_url + "/models/iris/predict", json=[SETOSA], timeout=30) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    by = {served_by(a) for a in answers}
    assert len({replica for _, replica in by}) == 2
    assert len({node for node, _ in by}) == 2
    assert {node for node, _ in by} <= nodes
    ingress = served_by(httpx.get(ray_url + "/livez"))
    assert ingress[0] in nodes and ingress not in by


def test_a_pipeline_runs_in_the_ingress_through_the_deployments_handles_across_nodes(
    ray_url: str, cluster: RayCluster, standalone: Server
) -> None:
    """The ingress checked the pipeline (its self-test through the handles) and runs each step on its model's
    deployment: one call has its first step on iris-proba's only replica and its last on a replica of iris on
    another node (``X-Served-By`` names the last replica that answered); the answers are the standalone's."""
    wait_for_replicas(cluster, "iris:1", 2, SCALE_TIMEOUT)
    entry = httpx.get(ray_url + "/pipelines/iris-both", timeout=30).json()
    assert (entry["state"], entry["reason"]) == ("ready", None), entry
    rows = [SETOSA, [6.7, 3.0, 5.2, 2.3]]
    direct = [
        httpx.post(f"{ray_url}/models/{model}/predict", json=rows, timeout=30).json()["predictions"]
        for model in ("iris-proba", "iris")
    ]
    (proba_node,) = nodes_serving(ray_url, "iris-proba", calls=5)
    ingress = served_by(httpx.get(ray_url + "/livez"))
    last_nodes: set[str] = set()
    deadline = time.monotonic() + 30
    while not last_nodes - {proba_node} and time.monotonic() < deadline:
        answer = httpx.post(ray_url + "/pipelines/iris-both/predict?steps=true", json=rows, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["predictions"] == direct[1]
        assert [(step["model"], step["predictions"]) for step in body["steps"]] == [
            ("iris-proba", direct[0]),
            ("iris", direct[1]),
        ]
        assert served_by(answer) != ingress  # the last step's replica answered, not the ingress
        last_nodes.add(served_by(answer)[0])
    assert last_nodes - {proba_node}, f"every call's iris step ran on iris-proba's node {proba_node}"
    # The same answers as ``stevedore-server run``'s, over the stevedore route and V2 (tensors at both ends).
    v2 = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4], "data": [*rows[0], *rows[1]]}]}
    for path, payload in (("/pipelines/iris-both/predict", rows), ("/v2/models/iris-both/infer", v2)):
        answers = [httpx.post(base + path, json=payload, timeout=30) for base in (ray_url, standalone.url)]
        assert answers[0].status_code == answers[1].status_code == 200, (path, answers[0].text, answers[1].text)
        assert answers[0].json() == answers[1].json(), path


def replicas_running(cluster: RayCluster, deployment: str) -> int:
    code = (
        "from ray import serve\n"
        f"status = serve.status().applications['stevedore'].deployments[{deployment!r}]\n"
        "print(status.replica_states.get('RUNNING', 0))"
    )
    return int(cluster.python(code).strip())


def wait_for_replicas(cluster: RayCluster, deployment: str, count: int, timeout: float) -> float:
    started = time.monotonic()
    while (running := replicas_running(cluster, deployment)) != count:
        assert time.monotonic() - started < timeout, f"{deployment}: {running} replicas, not {count}"
        time.sleep(1)
    return time.monotonic() - started


def test_a_slow_model_scales_from_one_replica_to_two_under_load_and_back(ray_url: str, cluster: RayCluster) -> None:
    assert replicas_running(cluster, "sleeper:1") == 1
    stop = threading.Event()
    replicas: set[str] = set()
    failures: list[int] = []

    def load() -> None:  # four callers, each a request of 0.3 s at a time: four in flight for a target of one
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                answer = client.post(ray_url + "/models/sleeper/predict", json=[0.3])
                if answer.status_code == 200:
                    replicas.add(served_by(answer)[1])
                else:
                    failures.append(answer.status_code)

    callers = [threading.Thread(target=load) for _ in range(4)]
    for caller in callers:
        caller.start()
    try:
        wait_for_replicas(cluster, "sleeper:1", 2, SCALE_TIMEOUT)
        deadline = time.monotonic() + 30
        while len(replicas) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        for caller in callers:
            caller.join()
    assert failures == []
    assert len(replicas) == 2  # both answered
    wait_for_replicas(cluster, "sleeper:1", 1, SCALE_TIMEOUT)


# -- the Serve config -----------------------------------------------------------------


def test_the_config_only_file_is_a_serve_config_that_serve_deploys(
    ray_url: str, cluster: RayCluster, settings_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "serve.yaml"
    port = int(ray_url.rsplit(":", 1)[1])
    command = readme_command("stevedore-server ray --config-only", cluster, settings_file, port, output)
    cluster.environment.run(command[0], *command[1:], env=cluster.env())
    config = yaml.safe_load(output.read_text())
    cluster.python(f"from ray.serve.schema import ServeDeploySchema\nServeDeploySchema.model_validate({config!r})")
    application = config["applications"][0]
    assert application["import_path"] == "stevedore_server.rayserve.app:build"
    options = {deployment["name"]: deployment for deployment in application["deployments"]}
    assert options["iris:1"]["num_replicas"] == 2
    assert options["sleeper:1"]["autoscaling_config"]["max_replicas"] == 2
    assert "stevedore-test-broken" not in output.read_text()
    status = (
        "from ray import serve\napp = serve.status().applications['stevedore']\n"
        "print(app.last_deployed_time_s, app.status.value, app.message)"
    )
    before = float(cluster.python(status).split()[0])
    deploy = readme_command("serve deploy", cluster, settings_file, port, output)
    cluster.environment.run(deploy[0], *deploy[1:], "--address", cluster.dashboard, env=cluster.env())
    deadline = time.monotonic() + DEPLOY_TIMEOUT
    while True:  # deployed again from the file, and running
        deployed, state, *message = cluster.python(status).split()
        assert state != "DEPLOY_FAILED", " ".join(message)
        if float(deployed) > before and state == "RUNNING":
            break
        assert time.monotonic() < deadline, f"the application deployed from the file did not run: {state} {message}"
        time.sleep(2)
    answer = httpx.post(ray_url + "/models/iris/predict", json=[SETOSA], timeout=30)
    assert (answer.status_code, answer.json()["predictions"]) == (200, [0])


# -- a node lost ------------------------------------------------------------------------


def nodes_serving(url: str, model: str, calls: int = 30) -> set[str]:
    answers = [httpx.post(f"{url}/models/{model}/predict", json=[SETOSA], timeout=30) for _ in range(calls)]
    return {served_by(answer)[0] for answer in answers}


def recovery(url: str, model: str, killed: float) -> tuple[float, int]:
    """Seconds from ``killed`` until ``model`` answers again (for five seconds in a row), and the requests that
    failed meanwhile."""
    recovered, failed = None, 0
    while time.monotonic() - killed < RECOVERY_TIMEOUT:
        try:
            ok = httpx.post(f"{url}/models/{model}/predict", json=[SETOSA], timeout=30).status_code == 200
        except httpx.TransportError:
            ok = False
        if ok:
            recovered = recovered or time.monotonic()
            if time.monotonic() - recovered > 5:
                return recovered - killed, failed
        else:
            recovered, failed = None, failed + 1
        time.sleep(0.2)
    raise AssertionError(f"{model} did not answer again within {RECOVERY_TIMEOUT}s of the node's death")


def test_requests_succeed_again_after_a_node_with_a_replica_is_killed(ray_url: str, cluster: RayCluster) -> None:
    """A worker node holding a replica of iris (two replicas) is killed (SIGKILL to all its processes): iris
    answers from its other replica, and the lost one is started again on a surviving node. If the node held
    iris-proba's only replica too, that model is back once its replica is."""
    head = cluster.python("print(ray.get_runtime_context().get_node_id())").strip()  # the driver's node
    iris_nodes, proba_nodes = nodes_serving(ray_url, "iris"), nodes_serving(ray_url, "iris-proba")
    candidates = sorted(iris_nodes - {head}, key=lambda node: node not in proba_nodes)  # iris-proba's first
    assert candidates, "no iris replica on a worker node"
    victim_id = candidates[0]
    cluster.node_of(victim_id).stop(signal.SIGKILL, grace=0)
    killed = time.monotonic()
    iris_back, iris_failed = recovery(ray_url, "iris", killed)
    wait_for_replicas(cluster, "iris:1", 2, RECOVERY_TIMEOUT)
    replaced = time.monotonic() - killed
    report = (
        f"recovery: iris (2 replicas) answered again {iris_back:.1f} s after its node was killed, "
        f"{iris_failed} requests failed; its lost replica ran again after {replaced:.1f} s"
    )
    if victim_id in proba_nodes:
        proba_back, proba_failed = recovery(ray_url, "iris-proba", killed)
        report += (
            f"; iris-proba (its only replica lost) answered again after {proba_back:.1f} s ({proba_failed} failed)"
        )
    print("\n" + report, file=sys.stderr)
    assert victim_id not in nodes_serving(ray_url, "iris", calls=20)
