"""Bounds a stranger cannot push past, against a real ``stevedore-server run``: the connections one process
takes (``--max-connections``), the gRPC calls it runs at once (``--max-concurrent-rpcs``), the interpreters the
model repository's index starts (one discovery for a burst of calls), and a full model refusing a request before
its body is read."""

from __future__ import annotations

import contextlib
import socket
import stat
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .helpers import record_distribution, wait_until
from .venvs import INSTALLED, REPO, Server, Venv

pytestmark = pytest.mark.server

#: Seconds a slow inference sleeps: long enough for a test to do its part while it runs.
SLOW = 10.0
#: Seconds a refusal may take to come: far less than ``SLOW``, and far more than a loaded machine needs.
PROMPT = 3.0


def serve(directory: Path, config: str, *args: str, **env: str) -> Server:
    """The real server of the environment running the tests, serving its plugins (the example's) and the sleeper
    test plugin (a model that sleeps as many seconds as its input says), ready."""
    site = directory / "site"
    record_distribution(site, "stevedore-test-sleeper", {"sleeper": "stevedore_test_sleeper:Sleeper"})
    (directory / "stevedore.toml").write_text(config)
    path = f"{REPO}:{site}:{INSTALLED / 'sleeper'}"
    here = Venv(Path(sys.prefix), ())
    options = ("--config", str(directory / "stevedore.toml"), *args)
    server = Server.start(here, directory / "server.log", *options, PYTHONPATH=path, **env)
    try:
        server.wait_for("/readyz", deadline=120)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(directory: Path, config: str, *args: str, **env: str) -> Iterator[Server]:
    server = serve(directory, config, *args, **env)
    try:
        yield server
    finally:
        server.stop()


def sleep_in_background(pool: ThreadPoolExecutor, server: Server, seconds: float = SLOW) -> Future[httpx.Response]:
    return pool.submit(httpx.post, server.url + "/models/sleeper/predict", json=[seconds], timeout=60)


# -- connections ---------------------------------------------------------------------------------------------------


def connection(server: Server) -> socket.socket:
    """A TCP connection to the server's HTTP port, held open without a request."""
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def status_on_a_new_connection(server: Server) -> int:
    with httpx.Client() as client:
        return client.get(server.url + "/livez").status_code


def test_a_connection_beyond_max_connections_gets_503_and_the_server_serves_after(tmp_path: Path) -> None:
    with running(tmp_path, "", "--max-connections", "4") as server:
        held = [connection(server) for _ in range(3)]
        try:
            assert status_on_a_new_connection(server) == 200  # the fourth connection: within the bound
            held.append(connection(server))
            assert status_on_a_new_connection(server) == 503  # the fifth: beyond it
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: status_on_a_new_connection(server) == 200, "the server to serve once they closed")
        assert "Exceeded concurrency limit" in server.log()


# -- concurrent gRPC calls -----------------------------------------------------------------------------------------


def sleeper_request(seconds: float) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="sleeper")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1]).contents.fp64_contents.append(seconds)
    return request


def test_an_rpc_beyond_max_concurrent_rpcs_gets_resource_exhausted(tmp_path: Path) -> None:
    config = "[models.sleeper]\nmax_concurrency = 2\nmax_queue = 0\n"
    with running(tmp_path, config, "--max-concurrent-rpcs", "2") as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
            slow = [stub.ModelInfer.future(sleeper_request(SLOW), timeout=60) for _ in range(2)]

            def both_running() -> bool:
                # Over HTTP, a payload the schema refuses takes neither an RPC's place nor the model's: 422 while
                # the model has room, 503 once the two slow calls hold both its places (and both RPC places).
                return httpx.post(server.url + "/models/sleeper/predict", json=["x"]).status_code == 503

            wait_until(both_running, "the two slow calls to run", deadline=SLOW / 2)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            for call in slow:
                assert call.result().outputs[0].name  # each of the two ran to its end
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live  # and the server serves after


# -- the model repository's index ----------------------------------------------------------------------------------


def counting_interpreter(directory: Path, count: Path) -> Path:
    """An "environment" for a model's ``python`` setting: this Python, started through a script that writes a line
    to ``count`` each time it is started to say which models an environment provides (a discovery)."""
    script = directory / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$STEVEDORE_WORKER" in *\'"mode":"describe"\'*) echo describe >> \'{count}\' ;; esac\n'
        f"exec '{sys.executable}' \"$@\"\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def discoveries(count: Path) -> int:
    return len(count.read_text().splitlines()) if count.exists() else 0


def index(server: Server) -> dict[str, str]:
    answer = httpx.post(server.url + "/v2/repository/index", timeout=120)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry["state"] for entry in answer.json()}


def grpc_index(server: Server) -> dict[str, str]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=120)
    return {model.name: model.state for model in answer.models}


def test_a_burst_of_index_calls_starts_each_environment_once_and_a_load_reads_again(tmp_path: Path) -> None:
    count = tmp_path / "discoveries"
    config = f'[models.iris]\npython = "{counting_interpreter(tmp_path, count)}"\n'
    with running(tmp_path, config) as server:
        at_start = discoveries(count)
        assert at_start >= 1  # the startup asked the environment which models it provides
        with ThreadPoolExecutor(48) as pool:
            answers = [pool.submit(index, server) for _ in range(40)]
            answers += [pool.submit(grpc_index, server) for _ in range(8)]
            wait(answers)
        assert discoveries(count) <= at_start + 1
        expected = {"iris": "READY", "iris-proba": "READY", "sleeper": "READY"}
        assert [answer.result() for answer in answers] == [expected] * len(answers)

        # What the server's own environment provides is read again at each index: a plugin installed now is listed.
        record_distribution(tmp_path / "site", "stevedore-test-counted", {"counted": "tests.predictors:CountsCalls"})
        assert index(server)["counted"] == "UNAVAILABLE"
        # A load asks the environments again, once; the index after it does not.
        before_load = discoveries(count)
        answer = httpx.post(server.url + "/v2/repository/models/iris/load", timeout=120)
        assert answer.status_code == 200, answer.text
        assert discoveries(count) == before_load + 1
        assert index(server)["iris"] == "READY"
        assert discoveries(count) == before_load + 1


# -- admission before the body -------------------------------------------------------------------------------------


def send_head(server: Server, path: str, declared: int, start: bytes) -> socket.socket:
    """A request whose head is sent whole, and of its body only ``start`` of the ``declared`` bytes: a client that
    is slow to send the rest, or never does."""
    sock = connection(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.url.removeprefix('http://')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + start)
    return sock


def answer_head(sock: socket.socket, within: float) -> str:
    """The head of the server's answer, as soon as it comes; ``TimeoutError`` if none comes ``within`` seconds."""
    sock.settimeout(within)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received.split(b"\r\n\r\n")[0].decode()


@pytest.mark.parametrize("path", ["/models/sleeper/predict", "/v2/models/sleeper/infer"])
def test_a_full_model_refuses_a_request_before_its_body_is_read(tmp_path: Path, path: str) -> None:
    config = "[models.sleeper]\nmax_concurrency = 1\nmax_queue = 0\ntimeout = 30\n"
    with running(tmp_path, config) as server, ThreadPoolExecutor(1) as pool:
        slow = sleep_in_background(pool, server)

        def full() -> bool:
            # A payload the schema refuses takes no place while the model has room (422), so the probe never
            # races the slow inference for the one place; once the model is full it is refused first (503).
            return httpx.post(server.url + "/models/sleeper/predict", json=["not seconds"]).status_code == 503

        wait_until(full, "the slow inference to fill the model", deadline=SLOW / 2)
        started = time.monotonic()
        sock = send_head(server, path, 100_000, b'{"inputs": [')
        try:
            head = answer_head(sock, within=PROMPT)
        finally:
            sock.close()
        assert head.startswith("HTTP/1.1 503"), head
        assert "retry-after:" in head.lower()
        assert time.monotonic() - started < PROMPT
        assert slow.result().status_code == 200  # the inference that filled it ran to its end
        assert httpx.post(server.url + path, json=predict_body(path)).status_code == 200  # and it serves after


def predict_body(path: str) -> object:
    """A valid body of ``path`` for the sleeper, sleeping no time."""
    if path.endswith("/infer"):
        return {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1], "data": [0]}]}
    return [0]
