"""The inference core: one call for every front end, models swapped while serving, and models whose output is
not one item a row (served, never batched)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stevedore_server import Predictor
from stevedore_server.base.errors import BadRequest, InvalidPayload, NotFound, NotReady
from stevedore_server.base.settings import ModelSettings, Settings
from stevedore_server.core import startup
from stevedore_server.core.inference import Action, JSONText, JSONValue, ModelRef, Tensors
from stevedore_server.core.server import ModelServer

from .helpers import Registers, fresh_manager
from .predictors import ROWS, FailsLoad, NoScore, RowSum


@asynccontextmanager
async def serving(*predictors: Predictor, settings: Settings | None = None) -> AsyncIterator[ModelServer]:
    """The server of ``predictors``, started as the app's lifespan starts it, without any front end."""
    settings = settings or Settings()
    server = startup.build_server(settings, startup.load(settings, fresh_manager(Registers(*predictors))))
    await startup.start_models(server)
    try:
        yield server
    finally:
        startup.stop_models(server)


def run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


def test_every_payload_kind_reaches_the_model_through_the_one_call() -> None:
    async def test() -> None:
        async with serving(RowSum()) as server:
            call = server.inference.call
            predict = ModelRef("rowsum"), Action.PREDICT
            assert (await call(*predict, JSONText(b"[[1, 2], [3, 4]]"))).result == [3, 7]
            assert (await call(*predict, JSONValue([[1, 2]]))).result == [3]
            assert (await call(*predict, Tensors({"input-0": np.array([[1.0, 2.0]])}))).result == [3]
            answer = await call(ModelRef("rowsum", "1"), Action.SCORE, JSONValue([{"x": [1, 2], "y": 3}]))
            assert (answer.model.name, answer.model.version, answer.result) == ("rowsum", "1", 1.0)

    run(test)


@pytest.mark.parametrize(
    ("ref", "action", "payload", "error"),
    [
        (ModelRef("nope"), Action.PREDICT, JSONValue([[1]]), NotFound),
        (ModelRef("rowsum", "9"), Action.PREDICT, JSONValue([[1]]), NotFound),
        (ModelRef("failsload"), Action.PREDICT, JSONValue([[1]]), NotReady),
        (ModelRef("noscore"), Action.SCORE, JSONValue([]), NotFound),
        (ModelRef("rowsum"), Action.PREDICT, JSONValue([["a"]]), InvalidPayload),
        (ModelRef("rowsum"), Action.PREDICT, JSONText(b"[[1,"), BadRequest),
        (ModelRef("rowsum"), Action.SCORE, Tensors({"input-0": np.ones((1, 1))}), BadRequest),
        (ModelRef("rowsum"), Action.PREDICT, Tensors({"other": np.ones((1, 1))}), BadRequest),
    ],
    ids=["unknown", "unknown-version", "not-ready", "no-score", "invalid", "malformed", "score-tensors", "inputs"],
)
def test_the_one_call_answers_a_typed_error(ref: ModelRef, action: Action, payload: Any, error: type) -> None:
    async def test() -> None:
        async with serving(RowSum(), NoScore(), FailsLoad()) as server:
            with pytest.raises(error):
                await server.inference.call(ref, action, payload)

    run(test)


class Gate(RowSum):
    """RowSum that waits for ``opened`` on a row holding 0, and answers with its ``offset`` added."""

    name = "gate"
    offset = 0

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.entered = threading.Event()
        self.opened = threading.Event()

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        if [0] in rows:
            self.entered.set()
            self.opened.wait(10)
        return [sum(row) + self.offset for row in rows]


class Gate100(Gate):
    offset = 100


def test_a_swapped_model_serves_new_calls_while_calls_in_flight_finish_on_the_old_one() -> None:
    async def test() -> None:
        old = Gate()
        async with serving(old) as server:
            in_flight = asyncio.create_task(server.inference.call(ModelRef("gate"), Action.PREDICT, JSONValue([[0]])))
            await asyncio.to_thread(old.entered.wait, 10)
            current = server.registry.get("gate")
            replacement = Gate100()
            replacement.load()
            new = dataclasses.replace(current, loaded=dataclasses.replace(current.loaded, predictor=replacement))
            new = await startup.serving.start(new, server.settings, server.metrics)
            assert server.registry.replace(new) is current
            retired = asyncio.create_task(startup.serving.retire(current, timeout=10))
            assert (await server.inference.call(ModelRef("gate"), Action.PREDICT, JSONValue([[1]]))).result == [101]
            await asyncio.sleep(0.1)
            assert not in_flight.done() and not retired.done()  # the old runtime waits for its call
            old.opened.set()
            answer = await in_flight
            assert answer.result == [0] and answer.model is current  # finished on the old model
            assert await retired is True

    run(test)


class Summary(Predictor):
    """An ml-py-stevedore style model answering for the whole table: its row count and column sums."""

    name = "summary"
    predict_schema = ROWS
    predict_fixture = [[1, 2], [3, 4]]

    def run_predict(self, rows: list[list[float]]) -> dict[str, Any]:
        return {"rows": len(rows), "sums": [sum(column) for column in zip(*rows, strict=True)]}


class Count(Predictor):
    """Takes any array, even ``[]``, and answers one number: ``[]`` in, ``[n]`` out."""

    name = "count"
    predict_schema = {"type": "array"}
    predict_fixture: list[Any] = []

    def run_predict(self, items: list[Any]) -> list[int]:
        return [len(items)]


def test_models_that_do_not_answer_one_item_a_row_are_served(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(Summary(), Count()))
    assert client.get("/readyz").json() == {"ready": True, "reasons": []}
    answer = client.post("/models/summary/predict", json=[[1, 2], [3, 4], [5, 6]])
    assert answer.json()["predictions"] == {"rows": 3, "sums": [9, 12]}
    assert client.post("/models/count/predict", json=[]).json()["predictions"] == [0]
    assert client.post("/models/count/predict", json=["a", "b"]).json()["predictions"] == [2]
    assert client.post("/predict", json={"predictor": "count", "payload": [1]}).json() == [1]


def test_a_model_that_is_not_row_aligned_is_served_unbatched(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(models={"count": ModelSettings(max_batch_size=8, max_batch_time=0.05)})
    with caplog.at_level(logging.WARNING, logger="stevedore.runtime"):
        client = make_client(Registers(Count()), settings=settings)
    assert "model count version 1 is served unbatched" in caplog.text
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(client.post("/models/count/predict", json=[0] * n).json()))
        for n in range(1, 6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(r["predictions"][0] for r in results) == [1, 2, 3, 4, 5]  # each its own call: never merged
    metrics = client.get("/metrics").text
    assert 'stevedore_batch_size_count{model="count"' not in metrics


def test_v2_requests_join_the_batches_of_stevedore_requests(make_client: Callable[..., TestClient]) -> None:
    class Batches(RowSum):
        name = "batches"
        max_batch_size = 16
        max_batch_time = 0.2
        calls: list[int] = []

        def run_predict(self, rows: list[list[float]]) -> list[float]:
            type(self).calls.append(len(rows))
            return super().run_predict(rows)

    client = make_client(Registers(Batches()))
    Batches.calls.clear()
    tensor = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [5, 6]}]}
    answers: dict[str, Any] = {}
    requests = {
        "v2": lambda: client.post("/v2/models/batches/infer", json=tensor).json()["outputs"][0]["data"],
        "stevedore": lambda: client.post("/models/batches/predict", json=[[1, 2]]).json()["predictions"],
    }
    threads = [threading.Thread(target=lambda k=k, f=f: answers.__setitem__(k, f())) for k, f in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {"v2": [11], "stevedore": [3]}
    assert Batches.calls == [2]  # one model call for both
