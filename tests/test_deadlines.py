"""Deadlines, against a real ``stevedore-server run`` and the counting model: ``X-Request-Timeout`` (seconds) on
every inference route, the V2 ``timeout`` parameter (microseconds, as Triton's) over REST and gRPC, each bounding
the request's wait and call under the model's own time-out (504, DEADLINE_EXCEEDED; a request that never ran is
counted as dropped); a bad value is a 400; and ``cancel = "kill"`` stopping the worker process of a call nobody
waits for any more."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import uvicorn
from tritonclient.utils import InferenceServerException

from stevedore_server.base.errors import ModelFailure, SettingError
from stevedore_server.base.settings import ModelLimits, ModelSettings, Settings
from stevedore_server.core.deadlines import Bound, Dropped, bounded
from stevedore_server.core.runtime import ModelRuntime
from stevedore_server.frontends.app import create_app
from stevedore_server.kit.loopback import free_ports
from stevedore_server.plugins.loading import LoadedModel
from stevedore_server.processes.isolation import describe_environment, load_in_processes

from .counting import FILE, HELD, body, metric, pids, ran, raw_request, release, running
from .helpers import Registers, fresh_manager, record_distribution, wait_until
from .test_streaming import CLOSED, Endless, events
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

#: The model's own time-out.
MODEL_TIMEOUT = 6.0
CONFIG = f"[models.counting]\nmax_concurrency = 1\ntimeout = {MODEL_TIMEOUT:g}\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    with running(tmp_path_factory.mktemp("deadlines"), CONFIG) as (server, calls):
        yield server, calls


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def hold(pool: ThreadPoolExecutor, server: Server, calls: Path, tag: int) -> Future[httpx.Response]:
    """A call holding the model's one thread until ``release``, running once this returns."""
    held = pool.submit(httpx.post, f"{server.url}/models/counting/predict", json=body(tag, HELD), timeout=60)
    wait_until(lambda: tag in ran(calls), f"call {tag} to hold the model")
    return held


def dropped(server: Server, reason: str = "deadline") -> float:
    return metric(server, "stevedore_requests_dropped_total", model="counting", reason=reason)


def v2_body(tag: int, seconds: float = 0.0, **parameters: object) -> dict[str, object]:
    tensor = {"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [tag, seconds]}
    return {"inputs": [tensor], "parameters": parameters}


ROUTES = {
    "stevedore": ("/models/counting/predict", body),
    "original": ("/predict", lambda tag: {"predictor": "counting", "payload": body(tag)}),
    "v2": ("/v2/models/counting/infer", v2_body),
    "generate": ("/v2/models/counting/generate", lambda tag: {"input-0": body(tag)}),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_request_timeout_passing_while_queued_answers_504_and_the_model_never_runs_it(
    served: tuple[Server, Path], pool: ThreadPoolExecutor, route: str
) -> None:
    server, calls = served
    path, payload = ROUTES[route]
    tag = {"stevedore": 101, "original": 102, "v2": 103, "generate": 104}[route]
    before = dropped(server)
    held = hold(pool, server, calls, tag * 10)
    answer = httpx.post(server.url + path, json=payload(tag), headers={"X-Request-Timeout": "0.5"}, timeout=30)
    assert answer.status_code == 504, answer.text
    assert "deadline (X-Request-Timeout) passed before its model ran it" in answer.json()["error"]
    assert not held.done()  # answered at its deadline, not once the model was free
    release(calls)
    held.result()
    assert tag not in ran(calls)
    assert dropped(server) == before + 1


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", ""])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_bad_request_timeout_is_a_400_naming_the_header(served: tuple[Server, Path], route: str, value: str) -> None:
    server, calls = served
    path, payload = ROUTES[route]
    answer = httpx.post(server.url + path, json=payload(199), headers={"X-Request-Timeout": value}, timeout=30)
    assert answer.status_code == 400
    assert "X-Request-Timeout header must be a positive number of seconds" in answer.json()["error"]
    assert 199 not in ran(calls)


def test_a_request_timeout_passing_while_the_model_runs_answers_504_and_the_call_finishes(
    served: tuple[Server, Path],
) -> None:
    server, calls = served
    errors = metric(server, "stevedore_inference_errors_total", model="counting", kind="timeout")
    before = dropped(server)
    answer = httpx.post(
        server.url + "/models/counting/predict", json=body(201, 2.0), headers={"X-Request-Timeout": "0.5"}, timeout=30
    )
    assert answer.status_code == 504
    assert "passed while its model ran it" in answer.json()["error"]
    assert 201 in ran(calls)  # it ran, and was not dropped
    assert dropped(server) == before
    assert metric(server, "stevedore_inference_errors_total", model="counting", kind="timeout") == errors + 1
    # The thread finishes its call (threads cannot be interrupted), then serves the next.
    answer = httpx.post(server.url + "/models/counting/predict", json=body(202), timeout=30)
    assert answer.json()["predictions"] == [202]


def test_the_model_timeout_bounds_a_request_with_a_longer_deadline(served: tuple[Server, Path]) -> None:
    server, _ = served
    answer = httpx.post(
        server.url + "/models/counting/predict",
        json=body(301, MODEL_TIMEOUT + 2),
        headers={"X-Request-Timeout": "60"},
        timeout=30,
    )
    assert answer.status_code == 504
    assert f"did not predict within {MODEL_TIMEOUT:g} s" in answer.json()["error"]
    wait_until(lambda: httpx.post(server.url + "/models/counting/predict", json=body(302), timeout=30).status_code
               == 200, "the model to be free again")  # fmt: skip


def test_the_v2_timeout_parameter_in_microseconds_bounds_a_rest_request(
    served: tuple[Server, Path], pool: ThreadPoolExecutor
) -> None:
    server, calls = served
    before = dropped(server)
    held = hold(pool, server, calls, 4010)
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = httpclient.InferInput("input-0", [1, 2], "FP64")
    tensor.set_data_from_numpy(__import__("numpy").array([[401, 0]], dtype="float64"))
    with pytest.raises(InferenceServerException) as failed:
        client.infer("counting", [tensor], timeout=500_000)  # tritonclient's timeout: microseconds, a parameter
    assert failed.value.status() == "504"
    assert "deadline (the timeout parameter) passed" in failed.value.message()
    release(calls)
    held.result()
    assert 401 not in ran(calls)
    assert dropped(server) == before + 1


@pytest.mark.parametrize("timeout", ["soon", -5, 0, True])
def test_a_bad_v2_timeout_parameter_is_a_400(served: tuple[Server, Path], timeout: object) -> None:
    server, calls = served
    answer = httpx.post(server.url + "/v2/models/counting/infer", json=v2_body(402, timeout=timeout), timeout=30)
    assert answer.status_code == 400
    assert "the timeout parameter must be a positive number of microseconds" in answer.json()["error"]
    assert 402 not in ran(calls)


def test_the_v2_timeout_parameter_bounds_a_grpc_call(served: tuple[Server, Path], pool: ThreadPoolExecutor) -> None:
    server, calls = served
    before = dropped(server)
    held = hold(pool, server, calls, 5010)
    client = grpcclient.InferenceServerClient(server.grpc_target)
    tensor = grpcclient.InferInput("input-0", [1, 2], "FP64")
    tensor.set_data_from_numpy(__import__("numpy").array([[501, 0]], dtype="float64"))
    with pytest.raises(InferenceServerException) as failed:
        client.infer("counting", [tensor], timeout=500_000)
    assert failed.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "deadline (the timeout parameter) passed" in failed.value.message()
    release(calls)
    held.result()
    assert 501 not in ran(calls)
    assert dropped(server) == before + 1


# -- cancel = "kill" -------------------------------------------------------------------------------------------


def predict(server: Server, tag: int) -> int:
    """A quick predict's status."""
    return httpx.post(server.url + "/models/counting/predict", json=body(tag), timeout=60).status_code


@pytest.mark.parametrize("cancel", ["kill", "finish"])
def test_cancel_kill_replaces_the_worker_process_of_a_call_nobody_waits_for(tmp_path: Path, cancel: str) -> None:
    config = f'[models.counting]\nprocesses = 1\ncancel = "{cancel}"\ntimeout = 30\n'
    with running(tmp_path, config) as (server, calls):
        # A deadline passing while the call runs.
        answer = httpx.post(
            server.url + "/models/counting/predict", json=body(1, 8), headers={"X-Request-Timeout": "1"}, timeout=30
        )
        assert answer.status_code == 504
        assert predict(server, 2) == 200
        [running_1], [running_2] = pids(calls, 1), pids(calls, 2)
        assert (running_2 != running_1) is (cancel == "kill")  # a new process, or the same one
        # A client leaving while its call runs.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(raw_request("/models/counting/predict", b"[[3, 8]]"))
            wait_until(lambda: 3 in ran(calls), "call 3 to run")
        assert predict(server, 4) == 200
        [running_3], [running_4] = pids(calls, 3), pids(calls, 4)
        assert (running_4 != running_3) is (cancel == "kill")
        if cancel == "kill":
            assert "killed: its client left, and the model's cancel is kill" in server.log()


def test_stopping_a_call_that_has_ended_leaves_the_next_call_its_thread_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's threads are pooled: when a request is given up (its deadline, its client) just as its call ends,
    its thread may run another request's call already. ``cancel = "kill"`` stops the call of the request given
    up, never that one: the one model thread (``processes = 1``) runs call 1, then call 2; giving up request 1
    then leaves call 2 and its process alone. Giving up request 3 while its call runs kills its process."""
    site = tmp_path / "site"
    record_distribution(site, "stevedore-test-counting", {"counting": "tests.counting:Counting"})
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{site}")  # the worker process finds the counting model there
    monkeypatch.setenv(FILE, str(calls))
    settings = Settings(models={"counting": ModelSettings(processes=1, cancel="kill", timeout=30)})
    [candidate], _, _ = describe_environment(sys.executable, ["counting"], settings)
    loaded = load_in_processes(candidate, settings)
    assert loaded.ready, loaded.reason
    try:
        asyncio.run(given_up_after_their_calls(loaded, settings.limits_for(loaded.predictor), calls))
    finally:
        loaded.predictor.unload()


async def given_up_after_their_calls(loaded: LoadedModel, limits: ModelLimits, calls: Path) -> None:
    runtime = ModelRuntime(loaded, limits)
    admission = runtime.admission
    first, second, third = Bound(), Bound(), Bound()
    try:
        with bounded(first):
            assert await runtime.call("predict", body(1), None) == [1]
        with bounded(second):
            held = asyncio.create_task(runtime.call("predict", body(2, HELD), None))
        await reached(calls, 2)
        admission.given_up("predict", first, Dropped.DEADLINE)  # request 1's deadline, come late
        release(calls)
        assert await held == [2]
        with bounded(third):
            killed = asyncio.create_task(runtime.call("predict", body(3, HELD), None))
        await reached(calls, 3)
        admission.given_up("predict", third, Dropped.DISCONNECTED)
        with pytest.raises(ModelFailure, match="WorkerFailure"):
            await killed
        with bounded(Bound()):
            assert await runtime.call("predict", body(4), None) == [4]
    finally:
        runtime.threads.close()
    [pid_1], [pid_2], [pid_3], [pid_4] = (pids(calls, tag) for tag in (1, 2, 3, 4))
    assert pid_1 == pid_2 == pid_3 != pid_4  # call 2's process kept; call 3's killed and replaced


async def reached(calls: Path, tag: int) -> None:
    """Wait (without holding the event loop) until the model runs call ``tag``."""
    for _ in range(3000):
        if tag in ran(calls):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"call {tag} never reached the model")


def test_cancel_kill_on_a_model_in_the_server_itself_stops_the_server_naming_it(tmp_path: Path) -> None:
    """A thread cannot be stopped: ``cancel = "kill"`` needs the model in worker processes of its own."""
    with pytest.raises(SettingError, match=r"models\.counting\.cancel: kill needs processes = N or python = \.\.\."):
        Settings(models={"counting": ModelSettings(cancel="kill")})
    Settings(models={"counting": ModelSettings(cancel="kill", python=sys.executable)})
    config = tmp_path / "kill.toml"
    config.write_text('[models.counting]\ncancel = "kill"\n')
    result = Venv(Path(sys.prefix), ()).run("stevedore-server", "check", "--config", str(config), check=False)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert f"setting models.counting.cancel (in {config}, table [models.counting]): kill needs processes" in output
    assert "Traceback" not in output


# -- streams ---------------------------------------------------------------------------------------------------


def test_a_request_timeout_ends_a_stream_with_a_504_event(tmp_path: Path) -> None:
    """A stream is one inference: its deadline bounds the whole of it, under the model's time-out (60 s here),
    and the stream ends with the 504 as its error event; the model's generator is closed."""
    (port,) = free_ports(1)
    app = create_app(Settings(), fresh_manager(Registers(Endless())))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server to start")
        CLOSED.clear()
        url = f"http://127.0.0.1:{port}/models/endless/predict/stream"
        with httpx.stream("POST", url, json=[[1]], headers={"X-Request-Timeout": "0.3"}, timeout=10) as response:
            received = list(events(response))
        kind, data = received[-1]
        assert kind == "error" and "deadline (X-Request-Timeout) passed while it streamed" in data
        assert len(received) > 2  # items came before it
        assert CLOSED.wait(5)
        bad = httpx.post(url, json=[[1]], headers={"X-Request-Timeout": "later"}, timeout=10)
        assert bad.status_code == 400 and "X-Request-Timeout" in bad.json()["error"]
    finally:
        server.should_exit = True
        thread.join(10)
