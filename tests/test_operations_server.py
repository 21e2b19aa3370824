"""Operations against the real server: metrics across worker processes, draining on SIGTERM under load."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import wait_until
from .test_operations import metric
from .venvs import Server, Venv

pytestmark = [pytest.mark.venv, pytest.mark.server]

SETOSA = [5.1, 3.5, 1.4, 0.2]
#: What uvicorn logs once the drain has closed the listening sockets (``DrainingServer.shutdown``).
LISTENERS_CLOSED = "Shutting down"
#: What uvicorn logs when the graceful time-out cut requests short.
DRAIN_CUT_SHORT = "timeout graceful shutdown exceeded"


@pytest.fixture
def two_workers(ops_venv: Venv, tmp_path: Path) -> Iterator[Server]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_12345.db").write_bytes(b"left over from an earlier run")
    server = Server.start(
        ops_venv, tmp_path / "server.log", "--workers", "2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    )
    try:
        server.wait_for("/readyz")
        yield server
    finally:
        server.stop()


def test_metrics_with_two_workers_count_every_request_once(two_workers: Server) -> None:
    for _ in range(20):  # a new connection each time, so both workers take some
        with httpx.Client() as client:
            assert client.post(two_workers.url + "/models/iris/predict", json=[SETOSA]).status_code == 200
    for _ in range(5):
        with httpx.Client() as client:
            assert client.post(two_workers.url + "/models/iris/predict", json=[[1]]).status_code == 422
    for _ in range(10):
        with httpx.Client() as client:
            assert client.get(two_workers.url + "/metrics").status_code == 200
    text = httpx.get(two_workers.url + "/metrics").text
    route = "/models/{name}/predict"
    assert metric(text, "stevedore_http_requests_total", route=route, method="POST", status="200") == 20
    assert metric(text, "stevedore_http_requests_total", route=route, method="POST", status="422") == 5
    assert metric(text, "stevedore_http_request_duration_seconds_count", route=route, method="POST") == 25
    assert metric(text, "stevedore_inferences_total", model="iris", action="predict") == 20
    assert metric(text, "stevedore_http_requests_total", route="/metrics", method="GET", status="200") == 10
    assert metric(text, "stevedore_model_ready", model="iris", version="1") == 1
    # Two worker processes served; the corrupt file planted before the start would have broken
    # the aggregation above had the directory not been cleaned at start.
    assert len(set(re.findall(r"Started server process \[(\d+)\]", two_workers.log()))) == 2
    # Each froze its own heap once its models were loaded.
    assert len(re.findall(r"startup heap frozen: [1-9]\d* objects", two_workers.log())) == 2


def test_sigterm_under_load_loses_no_accepted_request(ops_venv: Venv, tmp_path: Path) -> None:
    server = Server.start(
        ops_venv, tmp_path / "server.log", "--graceful-timeout", "15", "--max-queue", "256", "--max-concurrency", "4"
    )
    server.wait_for("/readyz")
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    slow_answer: dict[str, object] = {}
    slow_sent = threading.Event()

    def client_loop(number: int) -> None:
        while not stop.is_set():
            # A new connection for each request: one the server accepted is answered, or none was made.
            try:
                with httpx.Client(timeout=30) as client:
                    if number % 8 == 0:
                        response = client.post(server.url + "/models/sleeper/predict", json=[0.3])
                        expected = [0.3]
                    else:
                        response = client.post(server.url + "/models/iris/predict", json=[SETOSA] * 50)
                        expected = [0] * 50
                outcome = (
                    "answered"
                    if response.status_code == 200 and response.json()["predictions"] == expected
                    else f"bad {response.status_code}"
                )
            except (httpx.ConnectError, httpx.ConnectTimeout):
                outcome = "refused"  # no connection was made
            except httpx.HTTPError as error:
                # Connected, then closed or reset without an answer: even a request the server never read
                # (waiting in the kernel's backlog, or not yet parsed) is lost to its client.
                outcome = f"broken: {type(error).__name__}: {error}"
            with lock:
                outcomes[outcome] += 1
            if outcome == "refused":
                time.sleep(0.05)

    def long_request() -> None:
        # By http.client, which tells when the request has gone out whole: from then on it is the server's to
        # answer, whenever the SIGTERM comes.
        url = httpx.URL(server.url)
        connection = http.client.HTTPConnection(url.host, url.port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", "/models/sleeper/predict", body=b"[3]", headers=headers)
            slow_sent.set()
            response = connection.getresponse()
            slow_answer["status"], slow_answer["body"] = response.status, json.loads(response.read())
        except (OSError, http.client.HTTPException) as error:
            slow_answer["error"] = repr(error)
        finally:
            connection.close()

    def answered() -> int:
        with lock:
            return outcomes["answered"]

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(32)]
    slow = threading.Thread(target=long_request)
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: answered() >= len(threads), "as many answers as clients, the load under way")
        slow.start()
        assert slow_sent.wait(60), f"the long request was not sent: {slow_answer}"
        os.kill(server.process.pid, signal.SIGTERM)  # the long request's 3 s in the model lie ahead: the drain waits
        wait_until(lambda: LISTENERS_CLOSED in server.log(), "the drain to close the listeners", interval=0.05)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/livez", timeout=2)  # new connections are refused while draining
        assert server.process.poll() is None, "the connection was refused by a server already gone, not draining"
        exit_code = server.process.wait(timeout=30)
    finally:
        stop.set()
        for thread in [*threads, slow]:
            if thread.ident is not None:  # started (the long request starts only once the load is under way)
                thread.join(timeout=30)
        server.stop()
    print(f"outcomes: {dict(outcomes)}")
    assert exit_code == 0, server.log()
    assert DRAIN_CUT_SHORT not in server.log()  # the requests in flight finished within the graceful time-out
    assert slow_answer == {"status": 200, "body": {"model_name": "sleeper", "model_version": "1", "predictions": [3]}}
    broken = {outcome: count for outcome, count in outcomes.items() if outcome not in ("answered", "refused")}
    assert broken == {}, f"{outcomes}\n{server.log()[-3000:]}"
    assert outcomes["answered"] > 32
    # Every request the server answered reached its client whole: none was taken and then lost.
    served = len(re.findall(r'"POST /models/(?:iris|sleeper)/predict" 200', server.log()))
    assert served == outcomes["answered"] + 1  # and the long request
    assert "SIGTERM: draining" in server.log()
