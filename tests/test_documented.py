"""What the documentation promises of health probes, checked against a real ``stevedore-server run`` (the promises about
models in worker processes are checked in ``test_processes.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .helpers import record_distribution
from .predictors import COUNTED_CALLS
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

#: Every HTTP route a probe or an orchestrator may poll, each answering 200 for a ready server and model.
HTTP_PROBES = (
    "/livez",
    "/readyz",
    "/healthz",
    "/health/live",
    "/health/ready",
    "/health/ready?model=counted",
    "/health",
    "/health/uptime",
    "/models/counted/ready",
    "/models/counted/versions/1/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/counted/ready",
    "/v2/models/counted/versions/1/ready",
)
#: Rounds of every probe: as a kubelet polling for a few minutes.
PROBE_ROUNDS = 20


@pytest.fixture
def counted_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """The real ``stevedore-server run`` of the environment running the tests, serving ``counted``
    (``predictors.CountsCalls``), ready; and the file with a line a call of its model code."""
    site = tmp_path / "site"
    record_distribution(site, "stevedore-test-counted", {"counted": "tests.predictors:CountsCalls"})
    calls = tmp_path / "calls"
    here = Venv(Path(sys.prefix), ())
    environment = {"PYTHONPATH": f"{REPO}:{site}", COUNTED_CALLS: str(calls)}
    server = Server.start(here, tmp_path / "server.log", "--plugins", "stevedore-test-counted", **environment)
    try:
        server.wait_for("/readyz")
        yield server, calls
    finally:
        server.stop()


def probe_everything(server: Server) -> None:
    """Each health and readiness probe, over HTTP and gRPC, once; each must say ready."""
    with httpx.Client(base_url=server.url) as client:
        for path in HTTP_PROBES:
            answer = client.get(path)
            assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "counted"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
    with triton_grpc.InferenceServerClient(server.grpc_target) as v2:
        assert v2.is_server_live() and v2.is_server_ready() and v2.is_model_ready("counted")


def test_health_probes_never_rerun_predictions(counted_server: tuple[Server, Path]) -> None:
    server, calls = counted_server
    at_start = calls.read_text().splitlines()
    assert "predict" in at_start and "score" in at_start  # the self-test ran the model, before ready
    for _ in range(PROBE_ROUNDS):
        probe_everything(server)
    assert calls.read_text().splitlines() == at_start

    # The count sees a call the server makes: one predict request is one more line.
    answer = httpx.post(server.url + "/models/counted/predict", json=[[1, 2]])
    assert answer.status_code == 200 and answer.json()["predictions"] == [3]
    assert calls.read_text().splitlines() == [*at_start, "predict"]
