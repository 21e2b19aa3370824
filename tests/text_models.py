"""Text models for the tests of the OpenAI-compatible routes (``test_openai*.py``), served beside the contrib text
plugin through an entry point recorded on the server's ``PYTHONPATH`` (``text_models``): what the plugin does not
show (tools, a generation that fails half-way, a slow one whose ``finally`` leaves a marker file, an async
generator, a plain ``str`` answer, an embedding model refusing a text of a batch)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from stevedore_server import Generation, Predictor
from stevedore_server.base.errors import BadRequest

#: The plugin as ``tests.helpers.record_distribution`` takes it.
TEXT_MODELS = ("stevedore-test-text", {"text-models": "tests.text_models:text_models"})

TEXTS = {"type": "array", "items": {"type": "string"}}


class Words(Predictor):
    """Answers the words of its prompt (a chat: of its last message) back, a word a piece, at most
    ``max_tokens``; its ``finally`` writes ``metadata.marker`` (a file path), if given, once the generation is
    closed; ``metadata.delay`` seconds between pieces."""

    name = "words"
    version = "1"
    predict_schema = TEXTS
    predict_fixture = ["a b"]
    capabilities = ("chat", "complete")

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[Generation]:
        return self.pieces(prompt, params)

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[Generation]:
        return self.pieces(str(messages[-1].get("content") or ""), params)

    def pieces(self, prompt: str, params: dict[str, Any]) -> Iterator[Generation]:
        metadata = params.get("metadata", {})
        delay = float(metadata.get("delay", 0))
        words = prompt.split() * int(metadata.get("repeat", 1))
        limit = params.get("max_tokens", 64)
        try:
            for number, word in enumerate(words[:limit]):
                time.sleep(delay)
                yield Generation(("" if number == 0 else " ") + word, completion_tokens=number + 1)
            reason = "length" if len(words) > limit else "stop"
            yield Generation("", prompt_tokens=len(prompt.split()), finish_reason=reason)
        finally:
            if "marker" in metadata:
                Path(metadata["marker"]).write_text("closed")


#: The parameters a model takes only when it declares them (``Tools`` answers "echo" with those it was given).
DECLARED = ("tools", "tool_choice", "parallel_tool_calls", "response_format")


class Tools(Predictor):
    """Declares ``tools`` and ``response_format``: calls the first tool given with the last message's text as its
    argument; to the message "echo", answers the declared parameters it was handed, as JSON."""

    name = "tool-user"
    version = "1"
    predict_schema = TEXTS
    predict_fixture = ["a"]
    capabilities = ("chat", "tools", "response_format")

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Generation:
        if messages[-1]["content"] == "echo":
            return Generation(json.dumps({key: params[key] for key in DECLARED if key in params}))
        tools = params.get("tools")
        if not tools:
            return Generation("no tools given")
        name = tools[0]["function"]["name"]
        arguments = json.dumps({"text": messages[-1]["content"]})
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
        return Generation("", tool_calls=[call], finish_reason="tool_calls")


class Failing(Predictor):
    """A plain ``str`` answer, an async generator for completions; both fail on the word "fail" (the stream
    after its first piece)."""

    name = "failing"
    version = "1"
    predict_schema = TEXTS
    predict_fixture = ["a"]

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        if "fail" in str(messages[-1].get("content")):
            raise ValueError("asked to fail")
        return "fine"

    async def complete(self, prompt: str, params: dict[str, Any]) -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(0)
        if "fail" in prompt:
            raise ValueError("asked to fail")
        yield " second"


class Vectors(Predictor):
    """Embeds a text as its length and 1, batching requests (a call takes 50 ms, so they queue); refuses the text
    "refuse me" as a client's mistake (``BadRequest``), as a model refuses a text too long for it."""

    name = "vectors"
    version = "1"
    predict_schema = TEXTS
    predict_fixture = ["a"]
    max_batch_size = 16
    max_batch_time = 0.05

    def run_predict(self, texts: list[str]) -> list[str]:
        return texts

    def embed(self, texts: list[str], params: dict[str, Any]) -> list[list[float]]:
        if "refuse me" in texts:
            raise BadRequest("the text 'refuse me' is refused")
        time.sleep(0.05)
        return [[float(len(text)), 1.0] for text in texts]


def text_models() -> list[Predictor]:
    return [Words(), Tools(), Failing(), Vectors()]
