"""A traced request through ``stevedore-server ray`` on a real Ray cluster (a head and two workers on this machine):
the ingress on one node, the model's replica on another, one trace, received by a real OTLP receiver
(``otlp.Receiver``) from both: the replica's span a child of the ingress's ``forward`` span, the caller's
``traceparent`` continued.

Kept light: one model (iris, two replicas, at most one a node: one is on a node the ingress is not on)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .headstart import HeadStart
from .otlp import Receiver, Span
from .raycluster import RAY_VENV, RayCluster
from .venvs import Venv, free_port

pytestmark = pytest.mark.ray

SETTINGS = """
plugins = ["stevedore-sklearn-logreg"]
load_models = ["iris"]

[models.iris]
replicas = 2
max_replicas_per_node = 1
ray_actor_options = {num_cpus = 0.25}
"""
SETOSA = [5.1, 3.5, 1.4, 0.2]
#: Seconds for the application to deploy; for an answer from a replica on another node than the ingress's.
DEPLOY_TIMEOUT = 300
ANOTHER_NODE_TIMEOUT = 60


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def cluster(head_start: HeadStart, otlp: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """Every node (so every replica) has the ``OTEL_*`` variables sending spans to the receiver, and tracing on."""
    environment: Venv = head_start.result(RAY_VENV)
    running = RayCluster(environment, Path(tmp_path_factory.mktemp("traced-cluster")), otlp.environment())
    try:
        running.start(workers=2)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def ray_url(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    settings = tmp_path_factory.mktemp("traced-settings") / "models.toml"
    settings.write_text(SETTINGS)
    port = free_port()
    command = [
        str(cluster.environment.bin / "stevedore-server"), "ray", "--address", cluster.address,
        "--host", "127.0.0.1", "--port", str(port), "--config", str(settings),
    ]  # fmt: skip
    result = subprocess.run(command, env=cluster.env(), capture_output=True, text=True, timeout=DEPLOY_TIMEOUT)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return f"http://127.0.0.1:{port}"


def node_of(response: httpx.Response) -> str:
    return response.headers["x-served-by"].split("/")[0]


def traced_predict_on_another_node(ray_url: str, ingress_node: str) -> tuple[httpx.Response, str]:
    """A predict, each under a trace of its own, until one is answered by a replica on a node the ingress is not
    on; that answer and its trace's id."""
    deadline = time.monotonic() + ANOTHER_NODE_TIMEOUT
    while True:
        trace_id = secrets.token_hex(16)
        header = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        response = httpx.post(f"{ray_url}/models/iris/predict", json=[SETOSA], headers={"traceparent": header})
        assert response.status_code == 200, response.text
        if node_of(response) != ingress_node:
            return response, trace_id
        assert time.monotonic() < deadline, f"every answer came from the ingress's node {ingress_node}"


def test_a_request_through_the_ingress_to_a_replica_on_another_node_is_one_trace(ray_url: str, otlp: Receiver) -> None:
    ingress_node = node_of(httpx.get(f"{ray_url}/livez"))  # the ingress answers a route of no model
    response, trace_id = traced_predict_on_another_node(ray_url, ingress_node)

    def both_sides(spans: list[Span]) -> bool:
        names = {one.name for one in spans if one.trace_id == trace_id}
        return {"forward", "replica"} <= names

    otlp.wait(both_sides, f"the ingress's and the replica's spans of trace {trace_id}", deadline=60)
    spans = otlp.trace(trace_id)
    forward = next(one for one in spans if one.name == "forward")
    replica = next(one for one in spans if one.name == "replica")
    assert replica.parent_id == forward.span_id and replica.kind == "server" and forward.kind == "client"
    assert replica.attributes["stevedore.ray.replica"] == response.headers["x-served-by"]
    assert forward.attributes["stevedore.ray.deployment"] == "iris:1"
    tree = otlp.tree(trace_id)  # one tree: the ingress's server span its root, continuing the caller's trace
    assert tree.span.kind == "server" and tree.find("forward").find("replica").span == replica
