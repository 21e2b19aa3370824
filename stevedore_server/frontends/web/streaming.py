"""Streamed predictions: a predictor's ``predict_stream`` served as Server-Sent Events.

    POST /models/{name}/predict/stream   (the predict payload, validated as for predict)

Each item the generator yields is one event (``data: <JSON>``); the end is an
``end`` event naming the model, a failure an ``error`` event with the body a
non-streaming request would get (a model's failure logged under an error id).
The stream is the inference core's (``Inference.stream``, ``core.streams``):
validated, admitted and counted as every other call; here its items are
written as events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from stevedore_server.base.errors import ClientError, ModelFailure
from stevedore_server.base.logs import failure_answer, log_error
from stevedore_server.base.serialization import dumps
from stevedore_server.core.deadlines import bounded
from stevedore_server.core.inference import Action, JSONText, ModelRef, Payload
from stevedore_server.core.payload_log import RecordedItems
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.streams import Stream
from stevedore_server.frontends.payload_notes import from_json, http_exchange, note_request, note_response

from .bodies import model_ref, read_json_text, served_by, server_of
from .watching import request_bound

logger = logging.getLogger("stevedore.streaming")


@dataclass(frozen=True)
class EventFormat:
    """How a stream's items, its end and its failure are written as events (each protocol has its own)."""

    item: Callable[[ServingModel, Any], bytes]
    end: Callable[[ServingModel], bytes]
    error: Callable[[ClientError | ModelFailure], bytes]
    #: The value an item's event carries, as the payload log records it.
    data: Callable[[ServingModel, Any], Any] = lambda model, item: item


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
    ref = model_ref(request)
    server = server_of(request)
    bound = request_bound(request)
    model = await server.inference.admit(ref, Action.PREDICT, bound.deadline)  # 404 or 503 before the body is read
    body = await read_json_text(request)
    note_request(request.scope, server, model, from_json, body)
    with bounded(bound):  # its stream keeps it (``Admission.reserve``)
        return await stream_response(request, ref, JSONText(body), STEVEDORE_EVENTS)


async def stream_response(request: Request, ref: ModelRef, payload: Payload, events: EventFormat) -> Response:
    """The events of the stream of the model ``ref`` names on ``payload`` (``Inference.stream``: validated,
    its place in the model's bound taken): 404 for a model that does not stream, 503 when it is full."""
    stream = await server_of(request).inference.stream(ref, payload)
    recorded: RecordedItems | None = None
    if http_exchange(request.scope) is not None:  # the payload log records the items sent, once the stream ends
        recorded = RecordedItems()  # up to a bound: a stream may send far more than any body
        note_response(request.scope, RecordedItems.value, recorded, model=stream.model)
    body = sse_events(stream, events, recorded)
    headers = {"Cache-Control": "no-cache"} | served_by(stream.model)  # a traffic name's variant, named
    return StreamResponse([stream], body, media_type="text/event-stream", headers=headers)


class Held(Protocol):
    """A place in a model's bound, taken before the answer starts (a ``Stream``, a ``TextStream``)."""

    def release(self) -> None: ...


class StreamResponse(StreamingResponse):
    """The response of streams (a model's stream, a request's generations), which hold their places in the
    model's bound from before it starts: each given back by its items when they end, or here if they never run
    (the client left before the answer began)."""

    def __init__(self, held: Sequence[Held], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for place in self.held:
                place.release()


async def sse_events(
    stream: Stream, events: EventFormat, recorded: RecordedItems | None = None
) -> AsyncIterator[bytes]:
    try:
        async for item in stream.items():
            sent = events.item(stream.model, item)
            if recorded is not None:
                recorded.add(events.data(stream.model, item), len(sent))
            yield sent
    except (ClientError, ModelFailure) as error:
        yield events.error(error)
        return
    yield events.end(stream.model)


def error_body(error: ClientError | ModelFailure) -> dict[str, Any]:
    """The body a non-streaming request failing so gets (``frontends.app.model_failure``, ``client_error``)."""
    if isinstance(error, ClientError):
        return error.body()
    return failure_answer(str(error), log_error(logger, str(error), error.error))
