"""Text through the inference core (``core.text``, ``Inference.generations`` and ``Inference.embed``), in-process:
a generation holds its place among the model's ``max_concurrency`` for its whole life, one abandoned while its first
piece is made is closed on the model's threads, parameters asking for nothing pass, embeddings batch across users,
keep making batchers past the table's size, are labelled as embeddings when a batch fails, and are counted in the
statistics and traffic metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stevedore_server import Predictor
from stevedore_server.base.errors import InvalidParameter, ModelFailure
from stevedore_server.base.settings import ModelSettings, Settings
from stevedore_server.base.settings.traffic import read_traffic
from stevedore_server.core.inference import ModelRef
from stevedore_server.core.runtime import MAX_KEYED_BATCHERS, ModelRuntime
from stevedore_server.core.server import ModelServer
from stevedore_server.core.text import TextStream

from .test_core import run, serving

TEXTS = {"type": "array", "items": {"type": "string"}}


class Recorder(Predictor):
    """Completes a prompt with three pieces, a few milliseconds apart; records when each generation enters and
    leaves its generator, the thread its ``finally`` ran on and the parameters it was given; keeps the generators
    it made. The prompt "slow" takes 0.3 s to its first piece."""

    name = "recorder"
    predict_schema = TEXTS
    predict_fixture = ["a"]

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.log: list[tuple[str, str]] = []
        self.closed_on: list[str] = []
        self.closed = threading.Event()
        self.params: list[dict[str, Any]] = []
        self.made: list[Iterator[str]] = []

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[str]:
        self.params.append(params)
        generator = self.pieces(prompt)
        self.made.append(generator)  # as a model keeping its generations does: only a close runs their finally
        return generator

    def pieces(self, prompt: str) -> Iterator[str]:
        self.log.append(("enter", prompt))
        try:
            time.sleep(0.3 if prompt == "slow" else 0.01)
            for word in ("one", " two", " three"):
                yield word
                time.sleep(0.01)
        finally:
            self.log.append(("exit", prompt))
            self.closed_on.append(threading.current_thread().name)
            self.closed.set()


async def collected(stream: TextStream) -> str:
    return "".join([piece.text async for piece in stream.pieces()])


def test_two_generations_of_a_one_thread_model_never_interleave() -> None:
    async def test() -> None:
        recorder = Recorder()
        settings = Settings(models={"recorder": ModelSettings(max_concurrency=1)})
        async with serving(recorder, settings=settings) as server:
            recorder.log.clear()  # the self-test's
            streams = await server.inference.generations(ModelRef("recorder"), "complete", ["a", "b"], {})
            texts = await asyncio.gather(*(collected(stream) for stream in streams))
            assert texts == ["one two three"] * 2
            first, second = recorder.log[0][1], recorder.log[2][1]
            assert recorder.log == [("enter", first), ("exit", first), ("enter", second), ("exit", second)]

    run(test)


def test_a_generation_abandoned_while_its_first_piece_is_made_is_closed_on_the_model_threads() -> None:
    async def test() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            recorder.closed.clear()
            recorder.closed_on.clear()
            (stream,) = await server.inference.generations(ModelRef("recorder"), "complete", ["slow"], {})
            waiting = asyncio.create_task(collected(stream))
            await asyncio.sleep(0.1)  # the model is making its first piece
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await asyncio.to_thread(recorder.closed.wait, 5)
            assert recorder.closed_on[0].startswith("model-recorder"), recorder.closed_on

    run(test)


def test_parameters_asking_for_nothing_reach_no_model_and_are_not_refused() -> None:
    async def test() -> None:
        recorder = Recorder()
        async with serving(recorder) as server:
            nothing = {"response_format": {"type": "text"}, "tool_choice": "none", "parallel_tool_calls": True}
            streams = await server.inference.generations(
                ModelRef("recorder"), "complete", ["a"], {**nothing, "tools": [], "temperature": 0}
            )
            assert await collected(streams[0]) == "one two three"
            assert recorder.params[-1] == {"temperature": 0}
            for asked, param in [
                ({"tool_choice": "auto"}, "tool_choice"),
                ({"response_format": {"type": "json_object"}}, "response_format"),
                ({"tools": [{"type": "function"}], "tool_choice": "none"}, "tools"),
            ]:
                with pytest.raises(InvalidParameter) as refused:
                    await server.inference.generations(ModelRef("recorder"), "complete", ["a"], asked)
                assert refused.value.param == param

    run(test)


class Embedder(Predictor):
    """Embeds a text as its length and 1, batching (calls of 30 ms, so requests queue); records each call's texts
    and parameters; one vector too few for a batch holding "short"."""

    name = "embedder"
    predict_schema = TEXTS
    predict_fixture = ["a"]
    max_batch_size = 8
    max_batch_time = 0.05

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        self.calls.append((list(texts), params))
        time.sleep(0.03)
        vectors = [[float(len(text)), 1.0] for text in texts]
        return vectors[1:] if "short" in texts else vectors


def runtime_of(server: ModelServer, name: str) -> ModelRuntime:
    runtime = server.registry.get(name).runtime
    assert isinstance(runtime, ModelRuntime)
    return runtime


def test_embeddings_of_several_users_batch_together_and_the_batchers_make_room() -> None:
    async def test() -> None:
        embedder = Embedder()
        async with serving(embedder) as server:
            embedder.calls.clear()
            embed = server.inference.embed
            answers = await asyncio.gather(
                *(embed(ModelRef("embedder"), [text], {"user": text, "dimensions": 2}) for text in ("a", "bb", "c"))
            )
            assert [answer.result.tolist() for answer in answers] == [[[1.0, 1.0]], [[2.0, 1.0]], [[1.0, 1.0]]]
            assert embedder.calls == [(["a", "bb", "c"], {"dimensions": 2})]  # one call, without the users
            for number in range(MAX_KEYED_BATCHERS + 3):  # each set of parameters its batcher, idle once answered
                await embed(ModelRef("embedder"), ["a"], {"dimensions": number})
            batchers = runtime_of(server, "embedder").embed_batchers
            assert len(batchers.by_key) <= MAX_KEYED_BATCHERS
            assert runtime_of(server, "embedder").embed_batcher({"dimensions": 1000}) is not None

    run(test)


def test_a_batch_of_embeddings_with_a_vector_missing_is_an_embed_failure() -> None:
    async def test() -> None:
        async with serving(Embedder()) as server:
            with pytest.raises(ModelFailure, match="failed to embed"):
                await server.inference.embed(ModelRef("embedder"), ["short", "a"], {})

    run(test)


def test_embeddings_and_generations_count_in_the_statistics_and_their_traffic_variant() -> None:
    async def test() -> None:
        traffic = read_traffic(
            "test",
            {
                "vectors": {"split": [{"model": "embedder", "weight": 1}]},
                "words": {"split": [{"model": "recorder", "weight": 1}]},
            },
        )
        async with serving(Embedder(), Recorder(), settings=Settings(traffic=traffic)) as server:
            statistics = runtime_of(server, "embedder").statistics
            before = statistics.inference_count, statistics.successes
            await server.inference.embed(ModelRef("vectors"), ["a", "b"], {})
            assert (statistics.inference_count, statistics.successes) == (before[0] + 2, before[1] + 1)
            streams = await server.inference.generations(ModelRef("words"), "complete", ["a"], {})
            await collected(streams[0])
            counted = server.metrics.traffic_requests
            assert counted.labels("vectors", "embedder", "1")._value.get() == 1
            assert counted.labels("words", "recorder", "1")._value.get() == 1

    run(test)
