"""A generation's pieces made into one of OpenAI's choices: the text cut at a stop sequence, the tool calls,
the finish reason and the token counts.

A model may emit a stop sequence it was given anyway: the text is cut before it and the generation closed (its
``finally`` runs). While streaming, text that could be the start of a stop sequence is held back until the next
piece shows whether it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from stevedore_server.core.text import TextStream
from stevedore_server.predictor import Generation

from .parameters import Generating, message_words, words


class StopCutter:
    """Cuts a text given piece by piece before the first of ``stops``."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.longest = max((len(stop) for stop in stops), default=0)
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """What of ``text`` (after what was held back) can be sent now."""
        if not self.stops or self.stopped:
            return "" if self.stopped else text
        buffer = self.held + text
        found = [index for index in (buffer.find(stop) for stop in self.stops) if index >= 0]
        if found:
            self.held, self.stopped = "", True
            return buffer[: min(found)]
        kept = self.kept(buffer)
        self.held = buffer[len(buffer) - kept :]
        return buffer[: len(buffer) - kept]

    def kept(self, buffer: str) -> int:
        """The length of the longest end of ``buffer`` that begins a stop sequence."""
        for length in range(min(len(buffer), self.longest - 1), 0, -1):
            end = buffer[-length:]
            if any(stop.startswith(end) for stop in self.stops):
                return length
        return 0

    def flush(self) -> str:
        """What was held back, at the end of the generation."""
        held, self.held = self.held, ""
        return held


@dataclass
class Choice:
    """One choice as its pieces come: ``index`` among the answer's choices."""

    index: int
    cutter: StopCutter
    texts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reason: str | None = None

    def take(self, piece: Generation) -> tuple[str, list[dict[str, Any]]]:
        """Record ``piece``; the text and tool calls to send of it."""
        if piece.prompt_tokens is not None:
            self.prompt_tokens = piece.prompt_tokens
        if piece.completion_tokens is not None:
            self.completion_tokens = piece.completion_tokens
        if piece.finish_reason is not None:
            self.reason = piece.finish_reason
        calls = list(piece.tool_calls or [])
        self.tool_calls += calls
        text = self.cutter.feed(piece.text)
        self.texts.append(text)
        return text, calls

    def end(self) -> str:
        """The text held back, sent at the end."""
        rest = self.cutter.flush()
        self.texts.append(rest)
        return rest

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def finish_reason(self) -> str:
        if self.cutter.stopped:
            return "stop"
        return self.reason or ("tool_calls" if self.tool_calls else "stop")

    def completion_count(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else words(self.text)


async def pieces_of(stream: TextStream, choice: Choice) -> AsyncGenerator[tuple[str, list[dict[str, Any]]], None]:
    """The text and tool calls to send of each piece of ``stream`` as ``choice`` takes them, until the model ends
    or emits a stop sequence (the generation is then closed), and what was held back last."""
    async with contextlib.aclosing(stream.pieces()) as pieces:
        async for piece in pieces:
            text, calls = choice.take(piece)
            if choice.cutter.stopped:
                stream.stop()
            if text or calls:
                yield text, calls
    rest = choice.end()
    if rest:
        yield rest, []


async def collected(stream: TextStream, choice: Choice) -> Choice:
    """``choice`` with the whole of ``stream``."""
    async for _ in pieces_of(stream, choice):
        pass
    return choice


def usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(choice.completion_count() for choice in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def prompt_tokens(asked: Generating, choices: list[Choice]) -> int:
    """The prompts' tokens, each counted once (not once a choice): the model's count, else its words."""
    total = 0
    for number, given in enumerate(asked.inputs):
        counted = choices[number * asked.n].prompt_tokens
        if counted is None:
            counted = message_words(given) if asked.capability == "chat" else words(given)
        total += counted
    return total
