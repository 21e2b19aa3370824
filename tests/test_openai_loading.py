"""A predictor's text capabilities checked when it loads (``plugins.capabilities``): a declaration the contract
does not know or a method missing fails the load with the reason, and the self-test runs each capability once, so a
model answering junk is not served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from stevedore_server import Generation, Predictor
from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.loading import State, load_model

from .documentation import block, page

SOURCE = PluginSource("tests", "text")


class Text(Predictor):
    name = "text"
    version = "1"
    predict_schema = {"type": "array", "items": {"type": "string"}}
    predict_fixture = ["a"]

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts


class Streams(Text):
    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[str]:
        yield from prompt.split()[: params["max_tokens"]]

    async def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> AsyncIterator[Generation]:
        yield Generation("hi", 1, 1, "stop")


class Embeds(Text):
    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        return [[float(len(text)), 1.0] for text in texts]


class UnknownCapability(Streams):
    capabilities = ("chat", "translate")


class DeclaredNotImplemented(Text):
    capabilities = ("chat",)


class ToolsWithoutChat(Embeds):
    capabilities = ("embed", "tools")


class JunkPieces(Text):
    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[Any]:
        yield {"text": "not a piece"}


class JunkCounts(Text):
    def complete(self, prompt: str, params: dict[str, Any]) -> Generation:
        return Generation("hi", completion_tokens="1")  # type: ignore[arg-type]


class JunkFinish(Text):
    def complete(self, prompt: str, params: dict[str, Any]) -> Generation:
        return Generation("hi", finish_reason="eos")


class JunkToolCalls(Text):
    capabilities = ("chat", "tools")

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Generation:
        call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
        return Generation("", tool_calls=[call], finish_reason="tool_calls")


class Endless(Text):
    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[str]:
        while True:
            yield "again"


class RaggedVectors(Text):
    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        return [[1.0] * (index + 1) for index in range(len(texts))]


class MissingVector(Text):
    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        return [[1.0, 2.0]]


class NotFinite(Text):
    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        return [[float("nan"), 1.0] for _ in texts]


class Failing(Text):
    def complete(self, prompt: str, params: dict[str, Any]) -> str:
        raise RuntimeError("no weights")


def test_models_with_text_capabilities_load_and_declare_them() -> None:
    streams, embeds = load_model(Streams(), SOURCE), load_model(Embeds(), SOURCE)
    assert streams.state is State.READY and streams.predictor.text_capabilities == {"chat", "complete"}
    assert embeds.state is State.READY and embeds.predictor.text_capabilities == {"embed"}
    assert load_model(Text(), SOURCE).predictor.text_capabilities == frozenset()


@pytest.mark.parametrize(
    ("predictor", "reason"),
    [
        (UnknownCapability(), "capabilities failed: PluginError: unknown capabilities translate"),
        (DeclaredNotImplemented(), "capabilities declares chat but the class does not implement it"),
        (ToolsWithoutChat(), "tools or response_format without chat or complete"),
        (JunkPieces(), "chat in the self-test: TypeError: a generation's pieces must be str or Generation, got dict"),
        (JunkCounts(), "a Generation's completion_tokens must be a count (an int from 0), got '1'"),
        (JunkFinish(), "a Generation's finish_reason must be one of stop, length, tool_calls, content_filter"),
        (JunkToolCalls(), "chat in the self-test: TypeError: a Generation's tool_calls must be OpenAI's"),
        (Endless(), "complete in the self-test: ValueError: more than 4096 pieces"),
        (RaggedVectors(), "embed in the self-test: ValueError: embed must return one vector of numbers a text"),
        (MissingVector(), "embed must return one vector a text: 2 texts, got an array of shape (1, 2)"),
        (NotFinite(), "embed returned numbers that are not finite"),
        (Failing(), "complete in the self-test: RuntimeError: no weights"),
    ],
)
def test_a_model_with_a_wrong_capability_fails_to_load_with_the_reason(predictor: Predictor, reason: str) -> None:
    loaded = load_model(predictor, SOURCE)
    assert loaded.state is State.FAILED
    assert reason in (loaded.reason or "")


def test_the_pages_text_model_loads_and_answers() -> None:
    """``docs/llm/openai.md``'s ``class Echo(Predictor)``, loaded and self-tested as the server does."""
    namespace: dict[str, Any] = {}
    exec(block("python", "class Echo(Predictor)", page("llm/openai.md")), namespace)
    loaded = load_model(namespace["Echo"](), SOURCE)
    assert loaded.state is State.READY, loaded.reason
    predictor = loaded.predictor
    assert predictor.text_capabilities == {"chat", "complete", "embed"}
    pieces = list(predictor.complete("to be or not", {"max_tokens": 3}))
    assert "".join(piece.text for piece in pieces) == " to be or" and pieces[-1].finish_reason == "length"
    assert predictor.embed(["a b"], {}) == [[3.0, 2.0]]
