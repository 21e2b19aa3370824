"""Probes that strangers cannot turn into load or into information, against a real ``stevedore-server run`` with API
keys: the health checks run about once a second however many callers probe (HTTP and gRPC ``Watch``), the
``Watch`` streams are capped, a caller without a key learns statuses only, and gRPC reflection asks for a key.

The server's plugin is ``tests.predictors:RowSum`` with ``tests.probed``'s health check, which counts its runs in
a file and fails, with a path in its error, while a flag file exists."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .helpers import wait_until
from .probed import CHECK_FAILS, CHECK_RUNS
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

KEY = "probe-key-0123456789"
AUTHORIZATION = {"authorization": f"Bearer {KEY}"}
#: The model the plugin serves: its name must not reach a caller without a key on a server-wide route.
MODEL = "rowsum"
#: Concurrent HTTP connections of the thousand probes: enough to keep a 2-core server's loop busy.
CONNECTIONS = 32
WATCHES = 100
#: Seconds the watches are held open.
HOLD = 3.0
#: The server-wide probes over REST, with their status while a check fails: none may tell a caller without a key
#: the failing check's text or a model's name.
SERVER_PROBES = {"/readyz": 503, "/healthz": 503, "/v2/health/ready": 400, "/health/ready": 503, "/health": 200,
                 "/health/ready/": 503, "/health/": 200}  # fmt: skip


def record_plugin(site: Path) -> None:
    """A distribution on ``site`` whose predictor is ``RowSum`` and whose hooks are ``tests.probed``'s."""
    info = site / "stevedore_test_probed-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stevedore-test-probed\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        f"[stevedore.predictors]\n{MODEL} = tests.predictors:RowSum\n\n[stevedore.hooks]\nprobed = tests.probed\n"
    )


def start(directory: Path, *args: str, failing: bool = False) -> tuple[Server, Path]:
    """A server of the probed plugin with an API key file (one ``infer`` key), listening on both ports; and the
    file of its check's runs. ``failing``: its check fails from the start."""
    site, runs, flag = directory / "site", directory / "runs", directory / "volume-7f3a"
    record_plugin(site)
    keys = directory / "keys"
    keys.write_text(f"{hashlib.sha256(KEY.encode()).hexdigest()} infer\n")
    if failing:
        flag.touch()
    environment = {"PYTHONPATH": f"{REPO}:{site}", CHECK_RUNS: str(runs), CHECK_FAILS: str(flag)}
    here = Venv(Path(sys.prefix), ())
    arguments = ("--plugins", "stevedore-test-probed", "--api-key-file", str(keys), *args)
    server = Server.start(here, directory / "server.log", *arguments, **environment)
    try:
        server.wait_for("/readyz", status=503 if failing else 200)
        wait_until(lambda: grpc_listens(server), "gRPC to listen", explain=server.log)
    except BaseException:
        server.stop()
        raise
    return server, runs


def grpc_listens(server: Server) -> bool:
    with grpc.insecure_channel(server.grpc_target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=MODEL), timeout=5)
        except grpc.RpcError:
            return False
    return True


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A healthy server, its health ``Watch`` streams capped at ``WATCHES``; and the file of its check's runs."""
    server, runs = start(tmp_path_factory.mktemp("counted"), "--max-health-watches", str(WATCHES))
    yield server, runs
    server.stop()


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose check fails with its flag file's path (``volume-7f3a``) in the error."""
    server, _ = start(tmp_path_factory.mktemp("failing"), failing=True)
    yield server
    server.stop()


def runs_of(runs: Path) -> int:
    return len(runs.read_text().splitlines())


def at_most_once_a_second(runs: Path, before: int, started: float) -> None:
    elapsed = time.monotonic() - started
    ran = runs_of(runs) - before
    assert ran <= elapsed + 2, f"the checks ran {ran} times in {elapsed:.1f} s"


# -- at most one run of the checks a second ------------------------------------------------------------------


async def probe_concurrently(url: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(count)))
    return [answer.status_code for answer in answers]


def test_a_thousand_concurrent_keyless_readyz_run_the_checks_about_once_a_second(
    counted: tuple[Server, Path],
) -> None:
    server, runs = counted
    before, started = runs_of(runs), time.monotonic()
    statuses = asyncio.run(probe_concurrently(server.url, 1000))
    assert statuses == [200] * 1000
    at_most_once_a_second(runs, before, started)


def test_a_hundred_watches_read_the_cache_and_one_more_is_refused(counted: tuple[Server, Path]) -> None:
    server, runs = counted
    everything = health_pb2.HealthCheckRequest(service="")
    channels = [grpc.insecure_channel(server.grpc_target) for _ in range(4)]
    watches: list[Any] = []
    try:
        before, started = runs_of(runs), time.monotonic()
        for index in range(WATCHES):
            watch = health_pb2_grpc.HealthStub(channels[index % len(channels)]).Watch(everything)
            watches.append(watch)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(HOLD)
        at_most_once_a_second(runs, before, started)

        one_more = health_pb2_grpc.HealthStub(channels[0]).Watch(everything)
        with pytest.raises(grpc.RpcError) as refused:
            next(one_more)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_health_watches" in str(refused.value.details())

        watches.pop().cancel()  # a closed stream frees its place
        wait_until(lambda: watch_opens(channels[0], watches), "a watch to open once one closed", explain=server.log)
    finally:
        for watch in watches:
            watch.cancel()
        for channel in channels:
            channel.close()


def watch_opens(channel: grpc.Channel, watches: list[Any]) -> bool:
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    try:
        next(watch)
    except grpc.RpcError:
        return False
    watches.append(watch)
    return True


# -- statuses only, without a key -----------------------------------------------------------------------------


def test_keyless_probes_answer_statuses_without_reasons_names_or_paths(failing: Server) -> None:
    with httpx.Client(base_url=failing.url) as client:
        for path, status in SERVER_PROBES.items():
            answer = client.get(path)
            assert answer.status_code == status, f"{path}: {answer.status_code} {answer.text}"
            assert "volume-7f3a" not in answer.text and MODEL not in answer.text, f"{path}: {answer.text}"
        assert client.get("/readyz").json() == {"ready": False}
        assert client.get("/healthz").json() == {"status": "failing"}
        assert client.get("/health").json()["ready"] is True  # every model is, one boolean
        for path in (f"/models/{MODEL}/ready", f"/v2/models/{MODEL}/ready", f"/models/{MODEL}/versions/1/ready"):
            answer = client.get(path)
            assert answer.status_code == 200 and answer.json() == {"name": MODEL, "ready": True}, path


def test_probes_with_a_key_of_any_scope_answer_the_details(failing: Server) -> None:
    with httpx.Client(base_url=failing.url, headers=AUTHORIZATION) as client:
        reasons = client.get("/readyz").json()["reasons"]
        assert any("volume-7f3a" in reason for reason in reasons), reasons
        report = client.get("/healthz").json()
        assert "volume-7f3a" in report["checks"]["counted"]["detail"]
        assert [model["name"] for model in report["models"]] == [MODEL]
        assert client.get("/health").json()["ready"] == {MODEL: True}
        assert client.get(f"/models/{MODEL}/ready").json()["version"] == "1"


def test_metrics_without_a_key_leave_out_the_software_versions(failing: Server) -> None:
    keyless = httpx.get(failing.url + "/metrics").text
    assert "stevedore_http_requests_total" in keyless and "stevedore_model_ready" in keyless
    assert "stevedore_info" not in keyless
    keyed = httpx.get(failing.url + "/metrics", headers=AUTHORIZATION).text
    assert 'stevedore_info{component="stevedore-server"' in keyed


# -- gRPC reflection ---------------------------------------------------------------------------------------------


def list_services(server: Server, metadata: tuple[tuple[str, str], ...] = ()) -> list[str]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10))
    return [service.name for service in answer.list_services_response.service]


def test_reflection_needs_a_key_when_keys_are_on(failing: Server) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        list_services(failing)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "grpc.health.v1.Health" in list_services(failing, tuple(AUTHORIZATION.items()))


def test_open_reflection_answers_without_a_key(tmp_path: Path) -> None:
    server, _ = start(tmp_path, "--open-reflection")
    try:
        assert "inference.GRPCInferenceService" in list_services(server)
    finally:
        server.stop()
