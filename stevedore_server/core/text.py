"""Text through the inference core: a model's ``chat``, ``complete`` and ``embed`` (``Predictor.capabilities``).

``Inference.generations`` finds the model as every call does (a traffic name
routed, a lazy model loaded), checks that it serves the capability here and
takes the generations' places in its bound before anything is answered
(``Overloaded`` when full). Each ``TextStream`` is then one inference, like a
predict stream (``streams``): its time-out runs from its start, its metrics are
counted under the capability's name when it ends, a model's exception is a
``ModelFailure``. The method is called on the model's threads; a plain
generator it returns runs there a piece at a time, an async one on the event
loop, and a client that goes closes it (its ``finally`` runs, on the model's
threads: even while its first piece is still being made). A generation holds
one of the model's ``max_concurrency`` places from its call to its end
(``ModelRuntime.generating``), so that two generations never interleave their
steps on one model object (a llama.cpp context, say). A ``str`` or a
``Generation`` is one piece. ``Inference.embed`` runs ``embed`` through the
model's runtime (``ModelRuntime.embed``: batched where the model batches) and
checks its vectors. Writing the pieces and vectors in a protocol's shape is the
front end's.

A model in worker processes (``processes = N``) or on Ray Serve serves none of
these: its proxy forwards predict alone, and a request is told so.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from stevedore_server.base import tracing
from stevedore_server.base.errors import ClientError, InvalidParameter, ModelFailure, Overloaded, Unsupported
from stevedore_server.plugins.capabilities import as_generation, checked_vectors
from stevedore_server.predictor import Generation
from stevedore_server.processes.predictor import ProcessPredictor

from .admission import Reservation
from .runtime import ModelRuntime
from .serving import ServingModel
from .streams import DONE, NOT_TAKEN, async_items, thread_items

CHAT = "chat"
COMPLETE = "complete"
EMBED = "embed"
#: Parameters only a model declaring the capability of the same family takes: the first named is the one
#: a refusal names.
DECLARED_PARAMETERS = {
    "tools": ("tools", "tool_choice", "parallel_tool_calls"),
    "response_format": ("response_format",),
}
#: Values of those parameters that ask for nothing, which clients send by default: to a model not declaring the
#: family they are left out of its parameters, not refused (``parallel_tool_calls``: any value, without tools).
ASKING_NOTHING: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "tool_choice": ("none",),
    "response_format": ({"type": "text"},),
}


@dataclass
class TextStream:
    """One generation of a model (``chat`` of messages or ``complete`` of a prompt), holding its place in the
    model's bound until its pieces end or it is given back (``release``: its answer never started)."""

    model: ServingModel
    runtime: ModelRuntime
    capability: str
    #: The messages (chat) or the prompt (complete).
    argument: Any
    params: dict[str, Any]
    reservation: Reservation

    #: The caller has what it wants (``stop``): the generation ends at the next piece asked, as done.
    enough: bool = False

    async def pieces(self) -> AsyncGenerator[Generation, None]:
        """The model's pieces; ModelFailure for a model that raises or gives junk, InferenceTimeout past its
        time-out. Traced as a span of the capability's name, the pieces counted (not the current span: a
        generator's steps run in its consumer's context)."""
        attributes = {"stevedore.model.name": self.model.name, "stevedore.model.version": self.model.version}
        async with self.runtime.admission.streaming(self.capability, self.reservation), self.runtime.generating:
            with tracing.detached(self.capability, attributes) as span:
                count = 0
                async with contextlib.aclosing(model_pieces(self)) as pieces:
                    async for piece in pieces:
                        count += 1
                        yield piece
                        if self.enough:
                            break
                if span is not None:
                    span.set_attribute("stevedore.stream.items", count)

    def stop(self) -> None:
        """End the generation at the next piece asked (the caller saw a stop sequence): closed, and counted as
        an inference done (a client that leaves instead is not)."""
        self.enough = True

    def release(self) -> None:
        self.reservation.release()


def serving_runtime(model: ServingModel, capability: str) -> ModelRuntime:
    """The runtime that serves ``capability`` of ``model``: Unsupported (404) for a model without it, or where it runs
    elsewhere (worker processes, Ray Serve), where no text capability is forwarded."""
    label = f"model {model.name!r} version {model.version!r}"
    if isinstance(model.predictor, ProcessPredictor):
        raise Unsupported(f"{label} runs in worker processes (processes = N), where {capability} is not served")
    if capability not in model.predictor.text_capabilities:
        raise Unsupported(f"{label} does not support {capability}")
    runtime = model.runtime
    if not isinstance(runtime, ModelRuntime):
        raise Unsupported(f"{label} does not support {capability} where it runs (Ray Serve)")
    return runtime


def check_parameters(model: ServingModel, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the model takes them: InvalidParameter for ``tools`` (and its kin) or ``response_format`` to a
    model not declaring them, their values asking for nothing (``ASKING_NOTHING``) left out instead."""
    capabilities = model.predictor.text_capabilities
    taken = dict(params)
    for capability, names in DECLARED_PARAMETERS.items():
        if capability in capabilities:
            continue
        for name in names:
            if name in taken and asks_nothing(name, taken[name]):
                del taken[name]
        given = [name for name in names if name in taken]
        if given:
            raise InvalidParameter(
                f"model {model.name!r} version {model.version!r} does not support {given[0]}", given[0]
            )
    return taken


def asks_nothing(name: str, value: Any) -> bool:
    return name == "parallel_tool_calls" or value in ASKING_NOTHING.get(name, ())


def streams(model: ServingModel, capability: str, arguments: list[Any], params: dict[str, Any]) -> list[TextStream]:
    """A generation of ``model`` for each of ``arguments``, their places in its bound taken now (all or none:
    Overloaded when they do not all fit)."""
    runtime = serving_runtime(model, capability)
    params = check_parameters(model, params)
    capacity = runtime.limits.capacity
    if len(arguments) > capacity:  # never fits: a client's mistake, not a full model to retry later
        raise InvalidParameter(
            f"{len(arguments)} generations asked at once (prompts times n), more than model {model.name!r} version "
            f"{model.version!r} takes at a time ({capacity}: max_concurrency plus max_queue): ask fewer",
            "n",
        )
    reservations: list[Reservation] = []
    try:
        for _ in arguments:
            reservations.append(runtime.admission.reserve(capability))
    except Overloaded:
        for reservation in reservations:
            reservation.release()
        raise
    return [
        TextStream(model, runtime, capability, argument, params, taken)
        for argument, taken in zip(arguments, reservations, strict=True)
    ]


async def model_pieces(stream: TextStream) -> AsyncGenerator[Generation, None]:
    """The pieces of the model's generation, each checked; ModelFailure for a model that raises or gives junk."""
    model, capability = stream.model, stream.capability
    try:
        result, first = await first_step(stream)
    except ClientError:
        raise
    except Exception as error:
        raise ModelFailure(model.name, model.version, capability, error) from error
    if isinstance(result, (str, Generation)):
        yield checked(model, capability, result)
        return
    async with contextlib.aclosing(raw_pieces(model, capability, result, stream.runtime, first)) as pieces:
        try:
            async for piece in pieces:
                yield checked(model, capability, piece)
        except (ClientError, ModelFailure):
            raise
        except Exception as error:
            raise ModelFailure(model.name, model.version, capability, error) from error


def started(stream: TextStream) -> tuple[Any, Any]:
    """On the model's threads: the capability called, and where it returns a plain iterator, its first piece taken
    in the same call (``thread_items``'s ``first``), so the first piece is one hop from the event loop, not two."""
    result = getattr(stream.model.predictor, stream.capability)(stream.argument, stream.params)
    if isinstance(result, Iterator) and not hasattr(result, "__anext__"):
        generator = result if isinstance(result, Generator) else (piece for piece in result)
        return generator, next(generator, DONE)
    return result, NOT_TAKEN


async def first_step(stream: TextStream) -> tuple[Any, Any]:
    """``started`` on the model's threads. A caller cancelled meanwhile (its client left, its time-out passed)
    never gets the generator it made: it is closed there all the same, its ``finally`` run on the model's
    threads, not whenever (and wherever) it is collected."""
    handover = Handover()
    try:
        step: tuple[Any, Any] = await stream.runtime.threads.call(handover.started, stream)
        return step
    except asyncio.CancelledError:
        handover.abandon(stream.runtime)
        raise


class Handover:
    """What ``started`` made, on its way from the model's thread to the event loop: whichever of the two comes
    second (the thread with the generator made, the loop giving up) closes it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held for a check and an assignment only, never during the model's call
        self.made: Generator[Any, Any, Any] | None = None
        self.abandoned = False

    def started(self, stream: TextStream) -> tuple[Any, Any]:
        """On the model's threads: ``started``, its generator closed here if the caller has gone already."""
        result, first = started(stream)
        if isinstance(result, Generator):
            with self.lock:
                self.made = result
                abandoned = self.abandoned
            if abandoned:
                result.close()
        return result, first

    def abandon(self, runtime: ModelRuntime) -> None:
        """On the event loop, the caller gone: the generator made already closed on the model's threads."""
        with self.lock:
            self.abandoned = True
            made = self.made
        if made is None:
            return
        try:
            runtime.threads.executor.submit(made.close)
        except RuntimeError:  # its threads were shut down (the model unloaded): closed here, not left to chance
            made.close()


def raw_pieces(
    model: ServingModel, capability: str, result: Any, runtime: ModelRuntime, first: Any
) -> AsyncGenerator[Any, None]:
    """What a generation returned, as pieces: an async generator's on the loop, a plain one's on the threads (its
    first piece ``first``, taken already by ``started``)."""
    if hasattr(result, "__anext__"):
        return cast(AsyncGenerator[Any, None], async_items(result))
    if isinstance(result, Generator):
        return cast(AsyncGenerator[Any, None], thread_items(result, runtime, first))
    wrong = TypeError(
        f"{capability} must return a str, a Generation or a generator of them, got {type(result).__name__}"
    )
    raise ModelFailure(model.name, model.version, capability, wrong)


def checked(model: ServingModel, capability: str, piece: Any) -> Generation:
    try:
        return as_generation(piece)
    except TypeError as error:
        raise ModelFailure(model.name, model.version, capability, error) from error


def vectors_of(model: ServingModel, result: Any, count: int) -> np.ndarray[Any, Any]:
    """``embed``'s result as a 2-D array, one vector a text: ModelFailure for junk."""
    try:
        return checked_vectors(result, count)
    except ValueError as error:
        raise ModelFailure(model.name, model.version, EMBED, error) from error
