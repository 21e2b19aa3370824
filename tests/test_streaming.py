"""Streamed predictions (``predict_stream``) as Server-Sent Events, read by a real HTTP client from a real
uvicorn server on loopback: every item, the end, the error event, and a disconnect that closes the generator."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from stevedore_server import Predictor
from stevedore_server.base.settings import ModelSettings, Settings
from stevedore_server.frontends.app import create_app
from stevedore_server.kit.loopback import free_ports

from .helpers import Registers, fresh_manager
from .predictors import ROWS, RowSum
from .showcase import readme_block, showcase_module

#: Set when the endless generator's ``finally`` has run.
CLOSED = threading.Event()


class Counter(Predictor):
    """Streams each row's sum, then fails if the first row asks for it."""

    name = "counter"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [sum(row) for row in rows]

    def predict_stream(self, rows: list[list[float]]) -> Iterator[dict[str, Any]]:
        for index, row in enumerate(rows):
            if row[0] < 0:
                raise ValueError("negative")
            yield {"row": index, "sum": sum(row)}


class Endless(RowSum):
    """Streams forever until closed."""

    name = "endless"

    def predict_stream(self, rows: Any) -> Iterator[int]:
        try:
            count = 0
            while True:
                time.sleep(0.01)
                count += 1
                yield count
        finally:
            CLOSED.set()


class Capped(Endless):
    """Endless, with one stream at a time and a time-out of 0.3 s (``CAPPED``)."""

    name = "capped"

    def predict_stream(self, rows: Any) -> Iterator[int]:
        try:
            yield from super().predict_stream(rows)
        finally:
            CAPPED_CLOSED.set()


CAPPED = ModelSettings(timeout=0.3, max_concurrency=1, max_queue=0)
CAPPED_CLOSED = threading.Event()


class Ticker(RowSum):
    """An async generator."""

    name = "ticker"

    async def predict_stream(self, rows: Any) -> AsyncIterator[str]:
        for word in ("a", "b"):
            await asyncio.sleep(0)
            yield word


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    (port,) = free_ports(1)
    settings = Settings(models={"capped": CAPPED})
    app = create_app(settings, fresh_manager(Registers(Counter(), Endless(), Capped(), Ticker(), RowSum())))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event."""
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "":
            yield event, data
            event, data = "message", ""


def read_all(base_url: str, model: str, body: Any) -> list[tuple[str, str]]:
    with httpx.stream("POST", f"{base_url}/models/{model}/predict/stream", json=body, timeout=10) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return list(events(response))


def test_one_event_an_item_then_the_end(base_url: str) -> None:
    assert read_all(base_url, "counter", [[1, 2], [3, 4]]) == [
        ("message", '{"row":0,"sum":3}'),
        ("message", '{"row":1,"sum":7}'),
        ("end", '{"model_name":"counter","model_version":"1"}'),
    ]
    assert read_all(base_url, "ticker", [[1]]) == [
        ("message", '"a"'),
        ("message", '"b"'),
        ("end", '{"model_name":"ticker","model_version":"1"}'),
    ]


def test_a_failure_is_an_error_event_with_an_error_id(base_url: str) -> None:
    received = read_all(base_url, "counter", [[1, 2], [-1, 0]])
    assert received[0] == ("message", '{"row":0,"sum":3}')
    event, data = received[1]
    assert event == "error" and "failed to predict: ValueError" in data and '"error_id"' in data
    assert len(received) == 2


def test_the_payload_is_validated_before_the_stream(base_url: str) -> None:
    response = httpx.post(f"{base_url}/models/counter/predict/stream", json={"not": "rows"})
    assert response.status_code == 422
    response = httpx.post(f"{base_url}/models/rowsum/predict/stream", json=[[1]])
    assert response.status_code == 404 and "has no predict_stream" in response.json()["error"]


def test_a_disconnect_closes_the_generator(base_url: str) -> None:
    CLOSED.clear()
    with httpx.stream("POST", f"{base_url}/models/endless/predict/stream", json=[[1]], timeout=10) as response:
        received = []
        for item in events(response):
            received.append(item)
            if len(received) == 3:
                break
    assert received == [("message", "1"), ("message", "2"), ("message", "3")]
    assert CLOSED.wait(10), "the generator's finally did not run after the client disconnected"
    assert httpx.post(f"{base_url}/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]


def test_the_models_bound_and_time_out_hold_for_the_whole_stream(base_url: str) -> None:
    CAPPED_CLOSED.clear()
    url = f"{base_url}/models/capped/predict/stream"
    with httpx.stream("POST", url, json=[[1]], timeout=10) as response:
        received = iter(events(response))
        assert next(received) == ("message", "1")
        refused = httpx.post(url, json=[[1]])  # the one stream the model takes is running
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        last = list(received)[-1]
    assert last == ("error", "{\"error\":\"model 'capped' version '1' did not predict within 0.3 s\"}")
    assert CAPPED_CLOSED.wait(10)
    with httpx.stream("POST", url, json=[[1]], timeout=10) as response:  # admitted again
        assert response.status_code == 200


def test_streams_arriving_together_cannot_both_take_the_last_place(base_url: str) -> None:
    """Eight streams at once on a model that takes one: one answers, seven get 503 before their answer starts
    (the place is taken when the request is admitted, not once the stream's body begins)."""
    CAPPED_CLOSED.clear()

    async def open_stream(client: httpx.AsyncClient) -> int:
        async with client.stream("POST", "/models/capped/predict/stream", json=[[1]]) as response:
            async for _ in response.aiter_bytes():
                pass
            return response.status_code

    async def at_once() -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            return list(await asyncio.gather(*(open_stream(client) for _ in range(8))))

    assert sorted(asyncio.run(at_once())) == [200] + [503] * 7
    assert CAPPED_CLOSED.wait(10)
    with httpx.stream("POST", f"{base_url}/models/capped/predict/stream", json=[[1]], timeout=10) as response:
        assert response.status_code == 200  # the place was given back


def test_the_documented_example() -> None:
    """The showcase's countdown, which the streaming page shows, streams the events its documented curl shows."""
    command, *shown = readme_block("countdown").splitlines()
    expected = "\n".join(line.removeprefix("# ").removeprefix("#") for line in shown) + "\n\n"
    payload = command.split("-d '")[1].split("'")[0]
    app = create_app(Settings(), fresh_manager(Registers(showcase_module("countdown").Countdown())))
    with TestClient(app, base_url="http://localhost") as client:
        answer = client.post("/models/countdown/predict/stream", content=payload)
    assert answer.text == expected


class Speaker(Predictor):
    """Triton-style names: ``text_input`` in, ``text_output`` out; streams one word at a time."""

    name = "speaker"
    predict_schema = {"type": "array", "minItems": 1, "items": {"type": "string"}}
    predict_fixture = ["hi there"]
    tensor_inputs = [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]
    tensor_outputs = [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]

    def run_predict(self, texts: list[str]) -> list[str]:
        return [text.upper() for text in texts]

    def predict_stream(self, texts: list[str]) -> Iterator[list[str]]:
        for word in texts[0].split():
            if word == "boom":
                raise RuntimeError("boom")
            yield [word]


@pytest.fixture
def speaker(make_client: Any) -> TestClient:
    client: TestClient = make_client(Registers(Speaker(), RowSum()))
    return client


def test_generate_as_triton_defines_it(speaker: TestClient) -> None:
    answer = speaker.post("/v2/models/speaker/generate", json={"text_input": ["what is triton"], "parameters": {}})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model_name": "speaker", "model_version": "1", "text_output": ["WHAT IS TRITON"]}
    assert speaker.post("/v2/models/speaker/versions/1/generate", json={"text_input": ["x"]}).status_code == 200
    assert "generate" in speaker.get("/v2").json()["extensions"]


def test_generate_stream_as_triton_defines_it(speaker: TestClient) -> None:
    answer = speaker.post("/v2/models/speaker/generate_stream", json={"text_input": ["what is triton"]})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    words = [line.removeprefix("data: ") for line in answer.text.splitlines() if line]
    head = '{"model_name":"speaker","model_version":"1","text_output":'
    assert words == [head + '["what"]}', head + '["is"]}', head + '["triton"]}']


def test_generate_errors_in_the_protocols_format(speaker: TestClient) -> None:
    answer = speaker.post("/v2/models/speaker/generate", json={"text_input": "not a list"})
    assert answer.status_code == 400 and list(answer.json()) == ["error"]  # the V2 format: 422 is its 400
    assert speaker.post("/v2/models/speaker/generate", json=["x"]).status_code == 400
    assert speaker.post("/v2/models/speaker/generate", json={"parameters": {}}).status_code == 400
    assert speaker.post("/v2/models/nope/generate", json={"text_input": ["x"]}).status_code == 404
    assert speaker.post("/v2/models/rowsum/generate_stream", json={"input": [[1]]}).status_code == 404
    failed = speaker.post("/v2/models/speaker/generate_stream", json={"text_input": ["one boom"]})
    lines = [line.removeprefix("data: ") for line in failed.text.splitlines() if line]
    assert len(lines) == 2 and "\"error\":\"model 'speaker' version '1' failed to predict: RuntimeError" in lines[1]


def test_a_generate_stream_client_that_disconnects_closes_the_generator(base_url: str) -> None:
    CLOSED.clear()
    url = f"{base_url}/v2/models/endless/generate_stream"
    with httpx.stream("POST", url, json={"input-0": [[1]]}, timeout=10) as response:
        assert response.status_code == 200
        received = []
        for item in events(response):
            received.append(item)
            if len(received) == 2:
                break
    head = '{"model_name":"endless","model_version":"1","output-0":'
    assert received == [("message", head + "1}"), ("message", head + "2}")]
    assert CLOSED.wait(10), "the generator's finally did not run after the client disconnected"
