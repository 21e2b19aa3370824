"""The inference core: the one call every front end makes to run a model.

    answer = await inference.call(ModelRef("iris"), Action.PREDICT, JSONText(body))

The stevedore routes, the original ml-py-stevedore routes and the Open
Inference Protocol each decode their request into a payload (JSON text, a JSON
value, or decoded tensors) and call ``Inference.call``, which

1. finds the model (``NotFound``, or ``NotReady`` while it is not served): a
   traffic name (``[traffic.NAME]``) is first routed to one of its variants
   (``traffic``), so every front end and pipeline step gets it,
2. validates the payload against the model's schema (``prepare``: the only
   place a payload is validated; on the event loop, or on a worker thread for
   a payload over ``OFF_LOOP_BYTES``),
3. runs the model through its runtime (threads and admission, inline calls,
   batching: see ``runtime``), which counts the metrics and turns a model's
   exception into ``ModelFailure``, a time-out into ``InferenceTimeout`` and
   a full queue into ``Overloaded``,

and returns the model that answered with its result. A front end that can
answer before it reads the body asks ``Inference.admit`` first: a full model
then refuses without the body read, parsed or validated. ``Inference.stream`` does
the same for a model's stream (``streams``), ``Inference.generations`` and
``Inference.embed`` for a model's text capabilities (``text``). Every error is a typed
exception of ``base.errors``, which each front end's exception handlers turn
into its own error format. Writing the result (JSON, tensors) is the front
end's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from anyio import to_thread

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, InvalidPayload, NotFound, NotReady
from stevedore_server.base.serialization import loads
from stevedore_server.base.validation import SchemaValidator
from stevedore_server.plugins.loading import State

from . import deadlines, statistics, text
from .content_types import NUMPY_PLAN, ContentPlan
from .runtime import ModelRuntime
from .served_models import Registry
from .serving import ServingModel
from .streams import Stream
from .text import TextStream

if TYPE_CHECKING:
    from .signature import Signature

logger = logging.getLogger("stevedore.inference")

#: Payloads larger than this are parsed and validated on a worker thread: megabytes would stall the event loop.
OFF_LOOP_BYTES = 256 * 1024
#: Loads a request waits for before it gives up: its model may be evicted again as it is about to serve (a budget
#: too small for the models asked at once).
LAZY_ATTEMPTS = 3
#: Bodies from this size are checked as arrays where the schema allows: below it, the validator is faster.
VECTOR_CHECK_MIN_BYTES = 2048


class Action(enum.StrEnum):
    PREDICT = "predict"
    SCORE = "score"
    #: Parameters of a training job: validated here, run by ``jobs`` (never by the model's runtime).
    TRAIN = "train"


@dataclass(frozen=True)
class ModelRef:
    """A model by name, and version (None: its default version, ``Registry.get``)."""

    name: str
    version: str | None = None


@dataclass(frozen=True)
class JSONText:
    """A JSON document not parsed yet: a large table of numbers is parsed straight to an array."""

    body: bytes


@dataclass(frozen=True)
class JSONValue:
    """A parsed JSON value; ``size`` is the length of the text it came from (0 if unknown or small)."""

    value: Any
    size: int = 0


@dataclass(frozen=True)
class Tensors:
    """Decoded input tensors by the model's input names (Open Inference Protocol), what they become for the
    predictor once valid (their content types), the outputs the request selected (``Signature.select_outputs``;
    None: not known, every output) and the name the request gave its one input where the model took it as its
    only input under another name (``Signature.renamed_input``)."""

    arrays: dict[str, np.ndarray[Any, Any]]
    content: ContentPlan = NUMPY_PLAN
    outputs: list[str] | None = None
    renamed: str | None = None


Payload = JSONText | JSONValue | Tensors


@dataclass(frozen=True)
class Prepared:
    """A valid payload as the predictor takes it, and its rows (None where it is not rows)."""

    value: Any
    rows: int | None


@dataclass(frozen=True)
class Answer:
    """The model that answered, and its result (not written out yet): ``predict``'s, or, where ``outputs`` names
    the outputs asked of ``Predictor.predict_outputs``, its dict by output name."""

    model: ServingModel
    result: Any
    outputs: tuple[str, ...] | None = None


class Router(Protocol):
    """Routes a traffic name to one of its variants (``traffic.TrafficRouter``)."""

    def routes(self, ref: ModelRef) -> bool: ...

    def representative(self, name: str) -> ModelRef: ...

    def choose(self, name: str, payload: Payload) -> tuple[ModelRef, Payload]: ...

    def kept(self, name: str, action: Action, payload: Payload) -> Payload | None: ...

    def answered(self, name: str, answer: Answer, action: Action, payload: Payload | None) -> None: ...


class Loader(Protocol):
    """Loads lazy models (``lazy_loading.LazyLoader``)."""

    async def ensure(self, model: ServingModel, deadline: float | None = None) -> None: ...

    def used(self, model: ServingModel) -> None: ...


class Inference:
    """Runs the models of a registry for every front end (see the module's docstring)."""

    def __init__(self, registry: Registry, max_json_depth: int) -> None:
        self.registry = registry
        self.max_json_depth = max_json_depth
        #: Loads a lazy model on its first request, and is told which models serve (the memory budget's order);
        #: None where there are none (a Ray Serve ingress).
        self.loader: Loader | None = None
        #: Routes the traffic names (``[traffic.NAME]``) to their variants; None where there are none.
        self.router: Router | None = None
        #: Calls running now, and the event set when none is (made by the first who waits for it: ``idle``).
        self.in_flight = 0
        self.none_in_flight: asyncio.Event | None = None

    def standing_for(self, ref: ModelRef) -> ModelRef:
        """``ref``, or for a traffic name its heaviest variant: what answers for the name where no request is
        routed (its catalogue entry, readiness, schemas and V2 metadata, which a client asks before it infers)."""
        if self.router is not None and self.router.routes(ref):
            return self.router.representative(ref.name)
        return ref

    async def loaded(self, ref: ModelRef, deadline: float | None = None) -> ServingModel:
        """``resolve``, a lazy model loaded first: its first request waits for it, at most its time-out or until
        ``deadline`` (``time.monotonic()``; None: the request's bound's, ``deadlines``)."""
        ref = self.standing_for(ref)
        if deadline is None:
            bound = deadlines.current()
            deadline = bound.deadline if bound is not None else None
        for _ in range(LAZY_ATTEMPTS):
            model = self.registry.get(ref.name, ref.version)
            if model.state is not State.LAZY or self.loader is None:
                break
            await self.loader.ensure(model, deadline)
        return self.resolve(ref)

    def resolve(self, ref: ModelRef) -> ServingModel:
        """The model ``ref`` names, served now: NotFound, or NotReady with the reason."""
        model = self.registry.get(ref.name, ref.version)
        if not model.ready or model.runtime is None:
            raise NotReady(
                f"model {model.name!r} version {model.version!r} is not ready: {model.reason or model.state}"
            )
        statistics.attach(model.runtime.statistics)  # the request being served counts as this model's
        if self.loader is not None:
            self.loader.used(model)
        if tracing.active():  # the request's span names the model that serves it
            tracing.annotate({"stevedore.model.name": model.name, "stevedore.model.version": model.version})
        return model

    async def admit(self, ref: ModelRef, action: Action, deadline: float | None = None) -> ServingModel:
        """The model ``ref`` names, served and with room for one more ``action`` now: NotFound, NotReady, or
        Overloaded (503 with Retry-After) when its bound is full. What a front end asks before it reads a
        request's body, so that a full model refuses the request without reading, parsing or validating it; the
        place itself is taken by ``call``, so that a body still on its way holds none (a slow client cannot fill
        the model's queue). A lazy model is loaded first (waiting at most until ``deadline``, the request's)."""
        model = await self.loaded(ref, deadline)
        runtime = model.runtime
        if isinstance(runtime, ModelRuntime):  # a Ray Serve deployment bounds its calls itself
            runtime.admission.check(action)
        return model

    async def job_parameters(self, ref: ModelRef, action: Action, body: bytes) -> tuple[ServingModel, Any]:
        """The model ``ref`` names and the JSON ``body`` validated for a job of ``action`` (train, or a long
        predict), as a JSON value: a job keeps its parameters in the database. NotFound for a model without."""
        model = await self.loaded(ref)
        if action is Action.TRAIN and not model.predictor.has_train:
            raise NotFound(f"model {model.name!r} version {model.version!r} cannot be trained")
        if action is Action.SCORE:
            raise BadRequest("score runs as a request, not as a job")
        value = loads(body, self.max_json_depth)
        return model, prepare(model, action, JSONValue(value, len(body)), self.max_json_depth).value

    async def resolve_tensors(self, ref: ModelRef) -> tuple[ServingModel, Signature]:
        """The model ``ref`` names (a lazy one loaded: a client asks its metadata before it infers) and its tensors
        (Open Inference Protocol): BadRequest for a model without."""
        model = await self.loaded(ref)
        return model, tensor_signature(model)

    async def call(self, ref: ModelRef, action: Action, payload: Payload) -> Answer:
        """Validate ``payload`` and run ``action`` on the model ``ref`` names."""
        with self.flying():
            if statistics.current() is None:  # a front end that times no request of its own: this call is one
                with statistics.RequestTimer():
                    return await self.run(ref, action, payload)
            return await self.run(ref, action, payload)

    @contextlib.contextmanager
    def flying(self) -> Iterator[None]:
        """A call in flight while in the block, which ``idle`` waits for."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if not self.in_flight and self.none_in_flight is not None:
                self.none_in_flight.set()

    async def idle(self, within: float) -> bool:
        """Wait until no call runs, at most ``within`` seconds: False if one still did then. What work that must
        never take capacity from the requests (a shadow's copy) waits for."""
        deadline = time.monotonic() + within
        while self.in_flight:
            if self.none_in_flight is None or self.none_in_flight.is_set():
                self.none_in_flight = asyncio.Event()
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self.none_in_flight.wait()
            except TimeoutError:
                return False
        return True

    async def run(self, ref: ModelRef, action: Action, payload: Payload) -> Answer:
        """``call`` within the request's timing (``statistics``)."""
        if self.router is not None and self.router.routes(ref):  # a traffic name: one of its variants answers
            variant, payload = self.router.choose(ref.name, payload)
            kept = self.router.kept(ref.name, action, payload)  # the shadow's copy, before the variant sees it
            answer = await self.run(variant, action, payload)
            self.router.answered(ref.name, answer, action, kept)
            return answer
        model = await self.loaded(ref)
        if action is Action.SCORE and not model.predictor.has_score:
            raise NotFound(f"model {model.name!r} version {model.version!r} has no score service")
        started = time.perf_counter_ns()
        with tracing.span("validate"):
            prepared = await self.prepared(model, action, payload)
        statistics.validated(started, prepared.rows)
        runtime = model.runtime
        if runtime is None:  # resolve() returned a model with a runtime; this keeps the type checker sure of it
            raise NotReady(f"model {model.name!r} version {model.version!r} is not running")
        # Only a predictor overriding predict_outputs (here, in its worker processes or on its replicas) is told
        # the outputs: for any other the call is the same as before it existed.
        if runtime.chooses_outputs and isinstance(payload, Tensors):
            signature = tensor_signature(model)
            selected = signature.select_outputs([]) if payload.outputs is None else payload.outputs
            names = signature.output_names(selected)
            started = time.perf_counter_ns()
            result = await runtime.call_outputs(prepared.value, prepared.rows, names)
            statistics.called(started, runtime.statistics)
            return Answer(model, result, names)
        started = time.perf_counter_ns()
        result = await runtime.call(action, prepared.value, prepared.rows)
        statistics.called(started, runtime.statistics)
        return Answer(model, result)

    async def stream(self, ref: ModelRef, payload: Payload) -> Stream:
        """Validate ``payload`` as a predict and take a place for the stream of the model ``ref`` names (see
        ``streams``): NotFound for a model that does not stream, NotReady where it cannot (Ray Serve), Overloaded
        when its bound is full. A traffic name streams from the variant chosen for the request."""
        if self.router is not None and self.router.routes(ref):
            ref, payload = self.router.choose(ref.name, payload)
        model = await self.loaded(ref)
        if not model.predictor.has_stream:
            raise NotFound(f"model {model.name!r} version {model.version!r} has no predict_stream")
        with tracing.span("validate"):
            prepared = await self.prepared(model, Action.PREDICT, payload)
        runtime = model.runtime
        if not isinstance(runtime, ModelRuntime):
            raise NotReady(f"model {model.name!r} version {model.version!r} cannot stream where it runs")
        return Stream(model, runtime, prepared.value, runtime.admission.reserve(Action.PREDICT))

    async def generations(
        self, ref: ModelRef, capability: str, arguments: list[Any], params: dict[str, Any]
    ) -> list[TextStream]:
        """A generation (``chat`` of messages or ``complete`` of a prompt, ``text``) for each of ``arguments`` by
        the model ``ref`` names, their places in its bound taken (Overloaded when full): Unsupported (404) for a
        model without the capability, InvalidParameter for ``tools`` or ``response_format`` to one not declaring
        them. A traffic name's variant is chosen once for them all (sticky by a pointer into
        ``{"input": the first argument, **params}``)."""
        model = await self.loaded(self.routed(ref, arguments[0], params))
        streams = text.streams(model, capability, arguments, params)
        self.count_variant(ref, model)
        return streams

    async def embed(self, ref: ModelRef, texts: list[str], params: dict[str, Any]) -> Answer:
        """The vectors of ``texts`` (a 2-D array, one a text) by the model ``ref`` names (``text``): batched with
        other requests of the same ``params`` where the model batches; timed in its statistics as ``call`` is."""
        with self.flying():
            if statistics.current() is None:
                with statistics.RequestTimer():
                    return await self.embedded(ref, texts, params)
            return await self.embedded(ref, texts, params)

    async def embedded(self, ref: ModelRef, texts: list[str], params: dict[str, Any]) -> Answer:
        """``embed`` within the request's timing, each text a row."""
        model = await self.loaded(self.routed(ref, texts, params))
        runtime = text.serving_runtime(model, text.EMBED)
        started = time.perf_counter_ns()
        statistics.validated(started, len(texts))
        vectors = await runtime.embed(texts, params)
        statistics.called(started, runtime.statistics)
        answer = Answer(model, text.vectors_of(model, vectors, len(texts)))
        self.count_variant(ref, model)
        return answer

    def count_variant(self, ref: ModelRef, model: ServingModel) -> None:
        """Count the variant that serves a text request to a traffic name (no shadow copy: text is no predict)."""
        if self.router is not None and self.router.routes(ref):
            self.router.answered(ref.name, Answer(model, None), Action.PREDICT, None)

    def routed(self, ref: ModelRef, argument: Any, params: dict[str, Any]) -> ModelRef:
        """``ref``, or the variant a traffic name routes a text request to."""
        if self.router is None or not self.router.routes(ref):
            return ref
        return self.router.choose(ref.name, JSONValue({"input": argument, **params}))[0]

    async def prepared(self, model: ServingModel, action: Action, payload: Payload) -> Prepared:
        """``payload`` validated for ``action`` on ``model`` (``prepare``), off the event loop when large."""
        if size_of(payload) > OFF_LOOP_BYTES:
            return await to_thread.run_sync(prepare, model, action, payload, self.max_json_depth)
        return prepare(model, action, payload, self.max_json_depth)


def size_of(payload: Payload) -> int:
    if isinstance(payload, JSONText):
        return len(payload.body)
    if isinstance(payload, JSONValue):
        return payload.size
    return sum(array.nbytes for array in payload.arrays.values())


def prepare(model: ServingModel, action: Action, payload: Payload, max_depth: int) -> Prepared:
    """``payload`` validated against the model's schema for ``action``, as the predictor takes it."""
    loaded = model.loaded
    validator = {
        Action.PREDICT: loaded.predict_validator,
        Action.SCORE: loaded.score_validator,
        Action.TRAIN: loaded.train_validator,
    }[action]
    if validator is None:
        raise NotFound(f"model {model.name!r} version {model.version!r} has no {action} service")
    if isinstance(payload, Tensors):
        if action is not Action.PREDICT:
            raise BadRequest("tensors are predict inputs only")
        if payload.renamed is not None:
            log_renamed(model.name, model.version, payload.renamed, tensor_signature(model).inputs[0].name)
        return prepare_tensors(model, validator, payload.arrays, payload.content)
    if isinstance(payload, JSONText) and action is Action.PREDICT:
        return prepare_json_text(model, validator, payload.body, max_depth)
    value = loads(payload.body, max_depth) if isinstance(payload, JSONText) else payload.value
    validator.validate(value)
    return Prepared(value, rows_of(value))


def prepare_json_text(model: ServingModel, validator: SchemaValidator, body: bytes, max_depth: int) -> Prepared:
    """A predict body. For a ``numpy_input`` predictor a large array of numbers is checked in a few vectorised
    steps, straight from its text where it is a table, and handed over as the array itself; any other payload
    goes to the validator, which checks lists faster than they convert to an array
    (``benchmarks/micro/array_check.py``)."""
    check = model.loaded.array_check
    if check is not None and model.predictor.numpy_input and len(body) >= VECTOR_CHECK_MIN_BYTES:
        table = check.parse_table(body)  # no lists made
        if table is not None:
            return Prepared(table, len(table))
        value = loads(body, max_depth)
        array = check.rows(body, value) if isinstance(value, list) else None
        if array is not None:
            return Prepared(array, len(array))
    else:
        value = loads(body, max_depth)
    validator.validate(value)
    return Prepared(value, rows_of(value))


def prepare_tensors(
    model: ServingModel,
    validator: SchemaValidator,
    arrays: dict[str, np.ndarray[Any, Any]],
    content: ContentPlan = NUMPY_PLAN,
) -> Prepared:
    """Decoded tensors checked against the predict schema (on the array itself where the schema says nothing an
    array check cannot, else as JSON lists), then turned into what the predictor takes: the DataFrame or the
    decoded elements their content types ask for, arrays for a ``numpy_input`` predictor, else JSON lists."""
    signature = tensor_signature(model)
    names = [spec.name for spec in signature.inputs]
    if sorted(arrays) != sorted(names):
        raise BadRequest(f"the model's inputs are {', '.join(names)}; given: {', '.join(arrays) or 'none'}")
    first = arrays[names[0]]
    single = len(names) == 1
    rows = first.shape[0] if first.ndim else None

    def as_lists(given: dict[str, np.ndarray[Any, Any]]) -> Any:
        return given[names[0]].tolist() if single else {name: array.tolist() for name, array in given.items()}

    plain = content is NUMPY_PLAN
    if not model.predictor.numpy_input and plain:
        value = as_lists(arrays)
        validator.validate(value)
        return Prepared(value, rows)
    if signature.tensor_check is not None and single:
        problem = signature.tensor_check.problem(first)
        if problem:
            raise InvalidPayload(f"input {names[0]!r} does not match the model's schema: it {problem}")
    else:
        validator.validate(as_lists(arrays))
    if content.frame:  # a DataFrame is not rows the batcher can merge
        return Prepared(content.frame_of(content.decode(arrays)), None)
    decoded = content.decode(arrays)
    if not model.predictor.numpy_input:
        return Prepared(as_lists(decoded), rows)
    return Prepared(decoded[names[0]] if single else decoded, rows)


@functools.lru_cache(maxsize=256)
def log_renamed(model: str, version: str, given: str, taken: str) -> None:
    """Say, once per model and name (not once a request: the access log has that), that a request's one input
    was taken as the model's only input."""
    logger.info(
        "model %s version %s: input %r taken as its only input %r (a request of one input may name it as it "
        "likes, as MLServer and KServe allow); logged once for this name", model, version, given, taken,
    )  # fmt: skip


def tensor_signature(model: ServingModel) -> Signature:
    if model.signature is None:
        raise BadRequest(
            f"model {model.name!r} version {model.version!r} has no V2 interface: {model.no_tensor_reason}"
        )
    return model.signature


def rows_of(value: Any) -> int | None:
    return len(value) if isinstance(value, (list, np.ndarray)) else None
