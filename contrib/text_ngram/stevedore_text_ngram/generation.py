"""Generating text with the n-gram model: the request's parameters, and the pieces (a word each) a prompt's
continuation streams as, cut at a stop sequence."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server import Generation
from stevedore_server.base.errors import BadRequest

from . import corpus
from .ngram import NgramModel

#: Words a continuation has when the request does not say.
DEFAULT_MAX_TOKENS = 64
#: The most words one request may ask for: a bound on what a single call holds a thread for.
MAX_TOKENS_LIMIT = 100_000
#: OpenAI's range of ``temperature``.
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class Sampling:
    """How to choose the words: ``temperature`` 0 is greedy (the most frequent continuation every time)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def of(cls, params: Mapping[str, Any], temperature: float = 1.0) -> Sampling:
        """The sampling a request's parameters ask for (``temperature`` where they give none); a value out of its
        range is the client's error. Other parameters (``n``, ``user``, penalties...) are not the model's."""
        return cls(
            max_tokens=integer(params, "max_tokens", DEFAULT_MAX_TOKENS, 0, MAX_TOKENS_LIMIT),
            temperature=number(params, "temperature", temperature, 0.0, MAX_TEMPERATURE),
            top_p=number(params, "top_p", 1.0, 0.0, 1.0, low_open=True),
            seed=seed_of(params),
            stop=stops(params.get("stop")),
        )

    def rng(self) -> np.random.Generator | None:
        """The random draws of one generation, reproducible with a ``seed``; None when greedy."""
        return None if self.temperature == 0 else np.random.default_rng(self.seed)


def integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value


def number(
    params: Mapping[str, Any], name: str, default: float, low: float, high: float, low_open: bool = False
) -> float:
    value = params.get(name)
    if value is None:
        return default
    in_range = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (low < value if low_open else low <= value)
        and value <= high
    )
    if not in_range:
        bound = "above" if low_open else "from"
        raise BadRequest(f"{name} must be a number {bound} {low:g} to {high:g}, not {value!r}")
    return float(value)


def seed_of(params: Mapping[str, Any]) -> int | None:
    value = params.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"seed must be a non-negative integer, not {value!r}")
    return value


def stops(value: Any) -> tuple[str, ...]:
    """``stop``: a string or a list of them (the empty string stops nothing)."""
    listed = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(listed, list) or not all(isinstance(stop, str) for stop in listed):
        raise BadRequest(f"stop must be a string or a list of strings, not {value!r}")
    return tuple(stop for stop in listed if stop)


def generate(
    model: NgramModel, prompt: str, sampling: Sampling, prompt_tokens: int | None = None
) -> Iterator[Generation]:
    """The continuation of ``prompt``, a word at a time (each with the space before it), every piece giving the
    counts so far; the last one says why it ended: ``length`` at ``max_tokens`` words, ``stop`` at a stop sequence
    (which it leaves out)."""
    counted = len(corpus.words(prompt)) if prompt_tokens is None else prompt_tokens
    if sampling.max_tokens == 0:
        yield Generation("", counted, 0, "length")
        return
    words = words_of(model, prompt, sampling)
    if not sampling.stop:
        for count in range(1, sampling.max_tokens + 1):
            yield Generation(next(words), counted, count, "length" if count == sampling.max_tokens else None)
        return
    yield from cut_at_stops(words, sampling, counted)


def words_of(model: NgramModel, prompt: str, sampling: Sampling) -> Iterator[str]:
    """The continuation's pieces, without end."""
    context, rng = model.context_of(prompt), sampling.rng()
    pieces, choose = model.pieces, model.next_word
    while True:
        yield pieces[choose(context, rng, sampling.temperature, sampling.top_p)]


def cut_at_stops(words: Iterator[str], sampling: Sampling, prompt_tokens: int) -> Iterator[Generation]:
    """The pieces up to the first stop sequence; text that may be the start of one is held back until it is
    known not to be, so no piece ever shows part of a stop sequence."""
    text, shown = "", 0
    for count in range(1, sampling.max_tokens + 1):
        text += next(words)
        found = [index for stop in sampling.stop if (index := text.find(stop, shown)) >= 0]
        if found:
            yield Generation(text[shown : min(found)], prompt_tokens, count, "stop")
            return
        if count == sampling.max_tokens:
            yield Generation(text[shown:], prompt_tokens, count, "length")
            return
        safe = len(text) - held_back(text, sampling.stop)
        if safe > shown:
            yield Generation(text[shown:safe], prompt_tokens, count)
            shown = safe


def held_back(text: str, stop_sequences: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins a stop sequence."""
    return max(
        (size for stop in stop_sequences for size in range(1, len(stop)) if text.endswith(stop[:size])), default=0
    )


def chat_prompt(messages: list[dict[str, Any]]) -> str:
    """What a chat continues: the last user message (the last message, where no user spoke)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""


def content_text(content: Any) -> str:
    """A message's text: its ``content`` string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def chat_tokens(messages: list[dict[str, Any]]) -> int:
    """The prompt's words of a chat: those of every message (all of it is the prompt, as OpenAI counts)."""
    return sum(len(corpus.words(content_text(message.get("content")))) for message in messages)
