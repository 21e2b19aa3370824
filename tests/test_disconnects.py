"""Work dropped when its client leaves, against a real ``stevedore-server run`` and the counting model: clients
that leave while their requests wait (for the model's thread, in a batch's queue; over HTTP, or cancelling their
gRPC calls) never reach the model, are counted in ``stevedore_requests_dropped_total``, and the clients that stay
get their answers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from stevedore_server.core.admission import ModelThreads

from .counting import HELD, body, metric, ran, raw_request, release, running
from .helpers import wait_until
from .venvs import Server

pytestmark = pytest.mark.server

#: Clients that leave: hundreds, bounded.
LEAVING = 200
STAYING = 5


def http_target(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def full(server: Server, model: str) -> Callable[[], bool]:
    """Whether ``model``'s bound is full: a payload its schema refuses gets 422 while it has room, and 503 (before
    its body is read) once every place is taken, by requests running or waiting."""

    def is_full() -> bool:
        return httpx.post(f"{server.url}/models/{model}/predict", json=["x"], timeout=10).status_code == 503

    return is_full


def leave(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def send_and_hold(server: Server, model: str, tags: range) -> list[socket.socket]:
    """One connection a tag, each with its predict sent whole, held open (the clients wait for their answers)."""
    sockets = []
    for tag in tags:
        sock = socket.create_connection(http_target(server), timeout=10)
        sock.sendall(raw_request(f"/models/{model}/predict", httpx.Request("POST", "/", json=body(tag)).read()))
        sockets.append(sock)
    return sockets


def predict_in_background(
    pool: ThreadPoolExecutor, server: Server, model: str, tag: int, seconds: float = 0.0
) -> Future[httpx.Response]:
    return pool.submit(httpx.post, f"{server.url}/models/{model}/predict", json=body(tag, seconds), timeout=60)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as executor:
        yield executor


@pytest.mark.parametrize("model", ["counting", "counting-batched"])
def test_clients_that_leave_while_queued_never_reach_the_model_and_those_that_stay_get_answers(
    tmp_path: Path, pool: ThreadPoolExecutor, model: str
) -> None:
    # Room for exactly the held call, the clients that leave and those that stay (a batch of 64 holds the rest).
    queue = 1 + LEAVING + STAYING - (64 if model == "counting-batched" else 1)
    config = f"[models.{model}]\nmax_concurrency = 1\nmax_queue = {queue}\n"
    with running(tmp_path, config, "--max-connections", "1000") as (server, calls):
        held = predict_in_background(pool, server, model, 1, HELD)
        wait_until(lambda: 1 in ran(calls), "the first call to hold the model")
        leaving = send_and_hold(server, model, range(1000, 1000 + LEAVING))
        staying = [predict_in_background(pool, server, model, tag) for tag in range(2000, 2000 + STAYING)]
        try:
            wait_until(full(server, model), "every request to wait for the model")
        finally:
            leave(leaving)
        wait_until(
            lambda: metric(server, "stevedore_requests_dropped_total", model=model, reason="disconnected") == LEAVING,
            f"the {LEAVING} requests of the clients that left counted as dropped",
        )
        release(calls)
        assert held.result().json()["predictions"] == [1]
        for tag, answer in zip(range(2000, 2000 + STAYING), staying, strict=True):
            assert answer.result().json()["predictions"] == [tag]  # each stayer its own rows
        assert ran(calls) == {1, *range(2000, 2000 + STAYING)}  # not one of those that left
        assert metric(server, "stevedore_inferences_total", model=model, action="predict") == 1 + STAYING
        # A later client is served at once: the places of those that left were given back.
        assert httpx.post(f"{server.url}/models/{model}/predict", json=body(3000), timeout=10).status_code == 200


def counting_request(tag: int, seconds: float = 0.0) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="counting")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 2])
    tensor.contents.fp64_contents.extend([tag, seconds])
    return request


def test_grpc_calls_cancelled_while_queued_never_reach_the_model(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    config = f"[models.counting]\nmax_concurrency = 1\nmax_queue = {LEAVING + STAYING}\n"
    with running(tmp_path, config) as (server, calls), grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held = stub.ModelInfer.future(counting_request(1, HELD), timeout=60)
        wait_until(lambda: 1 in ran(calls), "the first call to hold the model")
        leaving = [stub.ModelInfer.future(counting_request(tag), timeout=60) for tag in range(1000, 1000 + LEAVING)]
        staying = [stub.ModelInfer.future(counting_request(tag), timeout=60) for tag in range(2000, 2000 + STAYING)]
        try:
            wait_until(full(server, "counting"), "every call to wait for the model")
        finally:
            for call in leaving:
                call.cancel()
        wait_until(
            lambda: (
                metric(server, "stevedore_requests_dropped_total", model="counting", reason="disconnected") == LEAVING
            ),
            f"the {LEAVING} cancelled calls counted as dropped",
        )
        release(calls)
        assert list(held.result().outputs[0].contents.fp64_contents or [1]) == [1]
        for call in staying:
            assert call.result().model_name == "counting"
        assert ran(calls) == {1, *range(2000, 2000 + STAYING)}


def test_grpc_calls_whose_deadline_passes_while_queued_never_reach_the_model(tmp_path: Path) -> None:
    config = "[models.counting]\nmax_concurrency = 1\nmax_queue = 100\n"
    with running(tmp_path, config) as (server, calls), grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        held = stub.ModelInfer.future(counting_request(1, HELD), timeout=60)
        wait_until(lambda: 1 in ran(calls), "the first call to hold the model")
        late = [stub.ModelInfer.future(counting_request(tag), timeout=1.0) for tag in range(1000, 1050)]
        for call in late:
            with pytest.raises(grpc.RpcError) as failed:
                call.result()
            assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(
            lambda: metric(server, "stevedore_requests_dropped_total", model="counting", reason="deadline") == 50,
            "the 50 calls past their deadline counted as dropped",
        )
        release(calls)
        held.result()
        assert ran(calls) == {1}


def test_a_call_cancelled_while_it_waits_for_a_thread_never_runs_and_leaves_the_model_idle() -> None:
    """The model's threads count a queued call cancelled (a client gone) as ended: the model is idle again once
    its running call ends (a replaced model's runtime closes when idle; inline calls wait for idle threads)."""
    threads = ModelThreads("waiting", 1)
    gate = threading.Event()
    ran_calls: list[str] = []

    def call(name: str) -> str:
        ran_calls.append(name)
        gate.wait(10)
        return name

    async def scenario() -> None:
        running = threads.call(call, "running")
        queued = threads.call(call, "queued")
        await asyncio.sleep(0.05)
        queued.cancel()  # taken out of the executor's queue at the loop's next turn
        await asyncio.sleep(0.05)
        gate.set()
        assert await running == "running"

    try:
        asyncio.run(scenario())
        wait_until(lambda: not threads.busy, "the model's threads to be idle")
    finally:
        threads.close()
    assert ran_calls == ["running"]
