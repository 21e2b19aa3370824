"""Streamed predictions: a predictor's ``predict_stream`` served as Server-Sent Events.

    POST /models/{name}/predict/stream   (the predict payload, validated as for predict)

Each item the generator yields is one event (``data: <JSON>``); the end is an
``end`` event naming the model, a failure an ``error`` event with the body a
non-streaming request would get (a model's failure logged under an error id).
The whole stream is one inference of the model: it takes its place in the
bound before the answer starts (503 when full; two streams arriving together
cannot both take the last place) and its time-out runs from the start.
A plain generator runs on the model's threads one item at a time; when the
client disconnects, the server stops asking for items and closes the
generator, so its ``finally`` runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from stevedore_server.base.errors import ClientError, ModelFailure, NotFound, NotReady
from stevedore_server.base.logs import failure_answer, log_error
from stevedore_server.base.serialization import dumps
from stevedore_server.core.admission import Reservation
from stevedore_server.core.inference import Action, JSONText, ModelRef, Payload
from stevedore_server.core.runtime import ModelRuntime
from stevedore_server.core.serving import ServingModel

from .bodies import read_json_text, server_of

logger = logging.getLogger("stevedore.streaming")

#: What a generator's step returns when the generator is done.
DONE: Any = object()


@dataclass(frozen=True)
class EventFormat:
    """How a stream's items, its end and its failure are written as events (each protocol has its own)."""

    item: Callable[[ServingModel, Any], bytes]
    end: Callable[[ServingModel], bytes]
    error: Callable[[ClientError | ModelFailure], bytes]


def event(data: Any, name: str | None = None) -> bytes:
    """One Server-Sent Event of ``data`` as JSON."""
    return (f"event: {name}\n".encode() if name else b"") + b"data: " + dumps(data) + b"\n\n"


#: The stevedore route's events: an item each, an ``end`` naming the model, an ``error`` with the error body.
STEVEDORE_EVENTS = EventFormat(
    item=lambda model, item: event(item),
    end=lambda model: event({"model_name": model.name, "model_version": model.version}, "end"),
    error=lambda error: event(error_body(error), "error"),
)


async def predict_stream(request: Request) -> Response:
    """Validate the body as predict does, then answer the model's items as Server-Sent Events."""
    ref = ModelRef(request.path_params["name"], request.path_params.get("version"))
    model = server_of(request).inference.resolve(ref)
    return await stream_response(request, model, JSONText(await read_json_text(request)), STEVEDORE_EVENTS)


async def stream_response(request: Request, model: ServingModel, payload: Payload, events: EventFormat) -> Response:
    """The events of ``model``'s stream on ``payload`` (validated first): 404 for a model that does not stream,
    503 when it is full."""
    if not model.predictor.has_stream:
        raise NotFound(f"model {model.name!r} version {model.version!r} has no predict_stream")
    prepared = await server_of(request).inference.prepared(model, Action.PREDICT, payload)
    runtime = model.runtime
    if not isinstance(runtime, ModelRuntime):
        raise NotReady(f"model {model.name!r} version {model.version!r} cannot stream where it runs")
    reservation = runtime.admission.reserve(Action.PREDICT)
    body = sse_events(model, runtime, prepared.value, events, reservation)
    return ReservedStream(reservation, body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class ReservedStream(StreamingResponse):
    """A stream holding its place in the model's bound from before it starts: given back by its events when
    they end, or here if they never run (the client left before the answer began)."""

    def __init__(self, reservation: Reservation, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reservation = reservation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.reservation.release()


async def sse_events(
    model: ServingModel, runtime: ModelRuntime, payload: Any, events: EventFormat, reservation: Reservation
) -> AsyncIterator[bytes]:
    try:
        async with runtime.admission.streaming(Action.PREDICT, reservation):
            async for item in model_items(model, runtime, payload):
                yield events.item(model, item)
    except (ClientError, ModelFailure) as error:
        yield events.error(error)
        return
    yield events.end(model)


def error_body(error: ClientError | ModelFailure) -> dict[str, Any]:
    """The body a non-streaming request failing so gets (``app.model_failure``, ``app.client_error``)."""
    if isinstance(error, ClientError):
        return error.body()
    return failure_answer(str(error), log_error(logger, str(error), error.error))


async def model_items(model: ServingModel, runtime: ModelRuntime, payload: Any) -> AsyncIterator[Any]:
    """The items of the predictor's stream; ModelFailure for one that raises or is not a generator."""
    try:
        stream = model.predictor.predict_stream(payload)
    except Exception as error:
        raise ModelFailure(model.name, model.version, "predict", error) from error
    if hasattr(stream, "__anext__"):
        items = async_items(stream)
    elif isinstance(stream, Generator):
        items = thread_items(stream, runtime)
    else:
        wrong = TypeError(f"predict_stream must return a generator, got {type(stream).__name__}")
        raise ModelFailure(model.name, model.version, "predict", wrong)
    try:
        async for item in items:
            yield item
    except ClientError:
        raise
    except Exception as error:
        raise ModelFailure(model.name, model.version, "predict", error) from error


async def async_items(stream: Any) -> AsyncIterator[Any]:
    try:
        async for item in stream:
            yield item
    finally:
        with anyio.CancelScope(shield=True):  # a disconnect cancels the response: close it all the same
            await stream.aclose()


async def thread_items(stream: Generator[Any, Any, Any], runtime: ModelRuntime) -> AsyncIterator[Any]:
    """A plain generator's items, each taken on the model's threads; closed there when the stream ends."""
    lock = threading.Lock()  # a close waits for a step still running on a thread

    def step(_: Any) -> Any:
        with lock:
            return next(stream, DONE)

    def close() -> None:
        with lock:
            stream.close()

    try:
        while (item := await runtime.threads.call(step, None)) is not DONE:
            yield item
    finally:
        # Not awaited: the response may be cancelled (a disconnect), and the step may still hold the lock.
        runtime.threads.executor.submit(close)
