"""A predictor's text capabilities (``chat``, ``complete``, ``embed``): checked when it loads, and the shapes of
what they give, which the self-test and the inference core check alike.

A model declaring a capability the contract does not know, or one whose method
it does not implement, fails to load with that reason; the self-test then runs
each capability once (``complete("Hello")``, ``chat`` of one user message,
``embed(["Hello", "world"])``) and a model answering junk (pieces that are not
text, vectors that are not one a text of one length of finite numbers) is not
served.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

import numpy as np

from stevedore_server.base.errors import PluginError
from stevedore_server.predictor import CAPABILITIES, CAPABILITY_METHODS, Generation, Predictor, overrides

#: Pieces the self-test reads of a generation at most: a generator that never ends is junk.
SELF_TEST_PIECES = 4096
#: What the self-test asks of each capability.
SELF_TEST_PROMPT = "Hello"
SELF_TEST_MESSAGES = [{"role": "user", "content": "Hello"}]
SELF_TEST_TEXTS = ["Hello", "world"]
SELF_TEST_PARAMS = {"max_tokens": 8}
#: OpenAI's finish reasons (``Generation.finish_reason``).
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")
#: The capabilities that take ``tools``/``response_format``: they need one of these methods.
GENERATING = ("chat", "complete")


def check_declared(predictor: Predictor) -> None:
    """PluginError for a declared capability the contract does not know, or whose method the class lacks."""
    declared = predictor.capabilities
    if declared is None:
        return
    if isinstance(declared, str) or not all(isinstance(name, str) for name in declared):
        raise PluginError(f"capabilities must be a tuple of names among {', '.join(CAPABILITIES)}: {declared!r}")
    unknown = sorted(set(declared) - set(CAPABILITIES))
    if unknown:
        raise PluginError(f"unknown capabilities {', '.join(unknown)}: the known ones are {', '.join(CAPABILITIES)}")
    missing = [name for name in CAPABILITY_METHODS if name in declared and not overrides(type(predictor), name)]
    if missing:
        raise PluginError(f"capabilities declares {', '.join(missing)} but the class does not implement it")
    if {"tools", "response_format"} & set(declared) and not set(GENERATING) & set(declared):
        raise PluginError("capabilities declares tools or response_format without chat or complete")


def self_test(predictor: Predictor) -> None:
    """Run each capability once and check what it gives; PluginError naming the capability otherwise."""
    capabilities = predictor.text_capabilities
    tests: dict[str, Callable[[], Any]] = {
        "complete": lambda: generated_text(predictor.complete(SELF_TEST_PROMPT, dict(SELF_TEST_PARAMS))),
        "chat": lambda: generated_text(predictor.chat(list(SELF_TEST_MESSAGES), dict(SELF_TEST_PARAMS))),
        "embed": lambda: checked_vectors(predictor.embed(list(SELF_TEST_TEXTS), {}), len(SELF_TEST_TEXTS)),
    }
    for name, test in tests.items():
        if name not in capabilities:
            continue
        try:
            test()
        except Exception as error:
            raise PluginError(f"{name} in the self-test: {type(error).__name__}: {error}") from error


def as_generation(piece: Any) -> Generation:
    """A piece of a generation as a ``Generation``: TypeError for anything but a ``str`` or a ``Generation`` whose
    fields are what the routes write (a wrong one would reach a client as an answer its SDK cannot read)."""
    if isinstance(piece, str):
        return Generation(piece)
    if not isinstance(piece, Generation):
        raise TypeError(f"a generation's pieces must be str or Generation, got {type(piece).__name__}")
    problem = generation_problem(piece)
    if problem is not None:
        raise TypeError(f"a Generation's {problem}")
    return piece


def generation_problem(piece: Generation) -> str | None:
    """What is wrong with ``piece``'s fields, if anything."""
    if not isinstance(piece.text, str):
        return f"text must be a str, got {type(piece.text).__name__}"
    for name, value in (("prompt_tokens", piece.prompt_tokens), ("completion_tokens", piece.completion_tokens)):
        if value is not None and (type(value) is not int or value < 0):
            return f"{name} must be a count (an int from 0), got {value!r}"
    if piece.finish_reason is not None and piece.finish_reason not in FINISH_REASONS:
        return f"finish_reason must be one of {', '.join(FINISH_REASONS)}, got {piece.finish_reason!r}"
    calls = piece.tool_calls
    if calls is not None and not (isinstance(calls, list) and all(is_tool_call(call) for call in calls)):
        return (
            'tool_calls must be OpenAI\'s [{"id", "type": "function", "function": {"name", "arguments"}}], '
            "the arguments a JSON string"
        )
    return None


def is_tool_call(call: Any) -> bool:
    function = call.get("function") if isinstance(call, dict) else None
    return (
        isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments"), str)
        and isinstance(call.get("id"), str)
        and call.get("type") == "function"
    )


def generated_text(result: Any) -> str:
    """The whole text of what ``chat``/``complete`` returned, each piece checked (the self-test's reading)."""
    if isinstance(result, (str, Generation)):
        return as_generation(result).text
    if hasattr(result, "__anext__"):
        return "".join(piece.text for piece in run_async(read_async(result)))
    if not isinstance(result, Iterator):
        raise TypeError(f"expected a str, a Generation or a generator of them, got {type(result).__name__}")
    pieces = []
    try:
        for count, piece in enumerate(result):
            if count >= SELF_TEST_PIECES:
                raise ValueError(f"more than {SELF_TEST_PIECES} pieces for max_tokens {SELF_TEST_PARAMS['max_tokens']}")
            pieces.append(as_generation(piece).text)
    finally:
        if isinstance(result, Generator):
            result.close()
    return "".join(pieces)


async def read_async(result: AsyncIterator[Any]) -> list[Generation]:
    pieces: list[Generation] = []
    try:
        async for piece in result:
            if len(pieces) >= SELF_TEST_PIECES:
                raise ValueError(f"more than {SELF_TEST_PIECES} pieces")
            pieces.append(as_generation(piece))
    finally:
        closing = getattr(result, "aclose", None)
        if closing is not None:
            await closing()
    return pieces


def run_async(coroutine: Any) -> Any:
    """``coroutine`` run to its end from blocking code: on a thread of its own where this one runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as error:  # handed to the caller, raised there
            outcome["error"] = error

    thread = threading.Thread(target=run, name="self-test async generation")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def checked_vectors(result: Any, count: int) -> np.ndarray[Any, Any]:
    """``embed``'s result as a 2-D float array: ValueError unless it is one vector a text, all of one length, of
    finite numbers."""
    try:
        vectors = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"embed must return one vector of numbers a text: {error}") from None
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise ValueError(f"embed must return one vector a text: {count} texts, got an array of shape {vectors.shape}")
    if vectors.shape[1] == 0:
        raise ValueError("embed returned empty vectors")
    if not np.isfinite(vectors).all():
        raise ValueError("embed returned numbers that are not finite (NaN or infinity)")
    return vectors
