"""A model's stream (``predict_stream``) as the inference core runs it: one inference, its items as they come.

``Inference.stream`` validates the payload as predict does and takes the
stream's place in the model's bound before anything is answered (``Overloaded``
when full; two streams arriving together cannot both take the last place).
The whole stream is then one inference: its time-out runs from its start and
its metrics are counted when it ends. A plain generator runs on the model's
threads one item at a time; an async one on the event loop (a model in worker
processes gives one: ``ProcessPredictor.predict_stream``). When the client
goes, the front end stops asking for items and the generator is closed, so its
``finally`` runs. Writing the items (Server-Sent Events, a protocol's shape)
is the front end's.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any

import anyio

from stevedore_server.base import tracing
from stevedore_server.base.errors import ClientError, ModelFailure

from .admission import Reservation
from .runtime import ModelRuntime
from .serving import ServingModel

#: What a generator's step returns when the generator is done.
DONE: Any = object()
#: ``thread_items``'s ``first`` where no item was taken yet.
NOT_TAKEN: Any = object()


@dataclass
class Stream:
    """A model's stream on a valid payload, holding its place in the model's bound until it ends (``items``
    runs to its end or is closed) or is given back (``release``: its answer never started)."""

    model: ServingModel
    runtime: ModelRuntime
    payload: Any
    reservation: Reservation

    async def items(self) -> AsyncIterator[Any]:
        """The predictor's items; ModelFailure for a stream that raises or is no generator, InferenceTimeout
        past the model's time-out."""
        async with self.runtime.admission.streaming("predict", self.reservation):
            if not tracing.active():
                async for item in model_items(self.model, self.runtime, self.payload):
                    yield item
                return
            async for item in self.traced_items():
                yield item

    async def traced_items(self) -> AsyncIterator[Any]:
        """The items, in a "stream" span with an event an item (not the current span: a generator's steps run
        in its consumer's context, and the model's steps are the stream's, not spans of their own)."""
        attributes = {"stevedore.model.name": self.model.name, "stevedore.model.version": self.model.version}
        with tracing.detached("stream", attributes) as span:
            count = 0
            async for item in model_items(self.model, self.runtime, self.payload):
                span.add_event("item", {"stevedore.stream.index": count})
                count += 1
                yield item
            span.set_attribute("stevedore.stream.items", count)

    def release(self) -> None:
        self.reservation.release()


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


async def thread_items(
    stream: Generator[Any, Any, Any], runtime: ModelRuntime, first: Any = NOT_TAKEN
) -> AsyncIterator[Any]:
    """A plain generator's items, each taken on the model's threads; closed there when the stream ends. ``first``
    is its first item (or ``DONE``) where the caller took it in the thread call that made the generator: the first
    item is then one hop to the threads away, not two (``text``)."""
    lock = threading.Lock()  # a close waits for a step still running on a thread

    def step(_: Any) -> Any:
        with lock:
            return next(stream, DONE)

    def close() -> None:
        with lock:
            stream.close()

    try:
        item = first if first is not NOT_TAKEN else await runtime.threads.call(step, None, traced=False)
        while item is not DONE:
            yield item
            item = await runtime.threads.call(step, None, traced=False)
    finally:
        # Not awaited: the response may be cancelled (a disconnect), and the step may still hold the lock.
        runtime.threads.executor.submit(close)
