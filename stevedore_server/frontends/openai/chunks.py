"""A streamed chat or completions answer: each choice's chunks as Server-Sent Events, ``data: {chunk}``, then the
usage chunk if asked, then ``data: [DONE]``.

The choices of a request (``n``, and a prompt each) are generated side by side, each in a task of its own (a
generation's steps stay in one task, where its time-out runs), their chunks sent as they come: each carries its
choice's ``index``. The response starts with its first event: until then nothing is sent, so an error the model
raises when called (a parameter it refuses, a failure) is the request's answer, with its status (400, 500...);
once the stream has begun, an error is an event ``data: {"error": ...}`` that ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any, TypeVar, cast

import anyio
from starlette.types import Send

from stevedore_server.base.errors import ClientError, ModelFailure
from stevedore_server.base.serialization import dumps
from stevedore_server.core.payload_log import RecordedItems
from stevedore_server.core.text import TextStream
from stevedore_server.frontends.web.streaming import StreamResponse

from .choices import Choice, StopCutter, pieces_of, prompt_tokens, usage
from .error_format import error_body
from .parameters import Generating

T = TypeVar("T")

DONE_EVENT = b"data: [DONE]\n\n"
#: The object of a chunk, and of a whole answer, a capability.
OBJECTS = {"chat": ("chat.completion.chunk", "chat.completion"), "complete": ("text_completion", "text_completion")}
ID_PREFIXES = {"chat": "chatcmpl-", "complete": "cmpl-"}
#: A chat's first chunk of each choice.
ROLE_FIELDS = {"delta": {"role": "assistant", "content": ""}}
#: What a choice's task puts last in the queue it shares with the others.
ENDED: Any = object()


def event(data: Any) -> bytes:
    return b"data: " + dumps(data) + b"\n\n"


class EventsResponse(StreamResponse):
    """Server-Sent Events that start once the first is ready: an error before it reaches the mount's error edge
    (``error_format``) as the request's answer. The events are closed however the response ends (the client
    leaving cancels it), so every generation is closed and its ``finally`` runs."""

    async def stream_response(self, send: Send) -> None:
        events = cast(AsyncGenerator[bytes, None], self.body_iterator)
        try:
            first = await anext(events, DONE_EVENT)
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for sent in events:
                await send({"type": "http.response.body", "body": sent, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()


async def chunks(
    asked: Generating, streams: list[TextStream], recorded: RecordedItems | None = None
) -> AsyncGenerator[bytes, None]:
    """The events of every choice's chunks as they come, then the usage chunk if asked, then ``[DONE]``; an
    error before the first is raised (the response has not started), an error after it ends them."""
    chunk = ChunkMaker(asked)
    choices = [Choice(index, StopCutter(asked.stop)) for index in range(len(streams))]
    sources = [choice_chunks(asked, chunk, stream, choice) for stream, choice in zip(streams, choices, strict=True)]
    began = False

    def sent(data: dict[str, Any]) -> bytes:
        written = event(data)
        if recorded is not None:
            recorded.add(data, len(written))
        return written

    try:
        async with contextlib.aclosing(sources[0] if len(sources) == 1 else side_by_side(sources)) as merged:
            async for data in merged:
                began = True
                yield sent(data)
    except (ClientError, ModelFailure) as error:
        if not began:
            raise
        yield sent(error_body(error))
        return
    if asked.include_usage:
        yield sent(chunk.usage(usage(prompt_tokens(asked, choices), choices)))
    yield DONE_EVENT


async def choice_chunks(
    asked: Generating, chunk: ChunkMaker, stream: TextStream, choice: Choice
) -> AsyncGenerator[dict[str, Any], None]:
    """One choice's chunks: for a chat, the first names the role, once the model has given a piece (so that an
    error calling it comes before any chunk); then a chunk a piece, and the last with the finish reason."""
    opening = chunk(choice.index, ROLE_FIELDS) if asked.capability == "chat" else None
    async for text, calls in pieces_of(stream, choice):
        if opening is not None:
            yield opening
            opening = None
        yield chunk(choice.index, piece_fields(asked.capability, text, calls, choice))
    if opening is not None:
        yield opening
    yield chunk(choice.index, end_fields(asked.capability, choice))


async def side_by_side(sources: list[AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    """The items of ``sources`` as they come, each source run in a task of its own, at most one item ahead each;
    the first error ends them all and is raised. Every source is closed when this ends, however it ends."""
    queue: asyncio.Queue[Any] = asyncio.Queue(len(sources))

    async def run(source: AsyncGenerator[T, None]) -> None:
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    await queue.put(item)
        except Exception as error:  # the consumer raises it: this task ends quietly
            await queue.put(error)
        else:
            await queue.put(ENDED)

    tasks = [asyncio.create_task(run(source)) for source in sources]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is ENDED:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):  # a disconnect cancels the response: the sources close all the same
            await asyncio.gather(*tasks, return_exceptions=True)


def piece_fields(capability: str, text: str, calls: list[dict[str, Any]], choice: Choice) -> dict[str, Any]:
    """A chunk's fields for one piece: its text, and for a chat its tool calls, numbered within the choice."""
    if capability == "complete":
        return {"text": text}
    delta: dict[str, Any] = {"content": text} if text else {}
    if calls:
        first = len(choice.tool_calls) - len(calls)
        delta["tool_calls"] = [{"index": first + number, **call} for number, call in enumerate(calls)]
    return {"delta": delta}


def end_fields(capability: str, choice: Choice) -> dict[str, Any]:
    fields: dict[str, Any] = {"text": ""} if capability == "complete" else {"delta": {}}
    return fields | {"finish_reason": choice.finish_reason}


class ChunkMaker:
    """The chunks of one streamed answer: one id, one creation time."""

    def __init__(self, asked: Generating) -> None:
        self.common = {
            "id": ID_PREFIXES[asked.capability] + uuid.uuid4().hex,
            "object": OBJECTS[asked.capability][0],
            "created": int(time.time()),
            "model": asked.model,
        }
        #: With ``include_usage``, every chunk but the last has ``usage: null``, as OpenAI's.
        self.usage_field: dict[str, Any] = {"usage": None} if asked.include_usage else {}

    def __call__(self, index: int, fields: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": index, **fields, "logprobs": None}
        choice.setdefault("finish_reason", None)
        return {**self.common, "choices": [choice], **self.usage_field}

    def usage(self, counts: dict[str, int]) -> dict[str, Any]:
        return {**self.common, "choices": [], "usage": counts}
