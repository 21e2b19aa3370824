"""Pipelines: models composed into one call, checked before they serve, run in process through the inference core.

The interface (what the front ends, the Ray Serve ingress and the CLI use)::

    definitions = parse_pipelines(settings.pipelines)        # base.settings.pipelines: typed, frozen
    pipelines = Pipelines(definitions, inference, metrics)   # inference: anything like core.inference.Inference
    await pipelines.check()                                  # after the models are loaded: ready or failed
    answer = await pipelines.predict("iris-sum", [[5.1, 3.5, 1.4, 0.2]])
    answer.document(with_steps=True)   # {"pipeline", "model_name", "predictions", "steps": [...]}
    pipelines.listing()                # [{"name", "state", "reason", ...}], GET /pipelines
    pipelines.predict_schema("iris-sum")

``Pipelines`` needs only ``Calls``: a ``registry`` (``served_models.Registry``) and ``call(ModelRef, Action,
Payload) -> Answer``. So each step goes through ``Inference.call`` (validation, admission, batching and the
model's metrics apply per step), in this process or, on Ray Serve, through the ingress's deployment handles.

A pipeline is checked (``check``) once the models are loaded: each step resolves to a served (or lazy) model,
each node it names exists, no node reaches itself (nor nests past ``MAX_DEPTH``, nor makes a call run more than
``MAX_STEPS`` model steps), its name is no model's, where a step's model declares an
``output_schema`` the next step's predict schema accepts it (``accepts``: a structural check), and the whole
pipeline runs on its first model's predict fixture. A pipeline that fails is listed as failed with its reason
and answers 503; the models keep serving. A failed pipeline is checked again, on its next request or listing,
once the models have changed (the registry's snapshot is swapped whole on every load and unload).

Running: a sequence hands each step the previous step's answer (``$response``, by default; the first step gets
the node's input, at the root the request); a switch runs its first step whose condition holds (none: 422); an
ensemble runs its steps at once and merges their answers by step key or with a reducer; a splitter runs one
step, chosen at random by weight. A step's time-out bounds it (504). A hard step's failure fails the pipeline
with that step's own status, the step named; a soft step's failure is recorded and passed over: what follows
receives the previous successful answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stevedore_server.base import tracing
from stevedore_server.base.errors import (
    SHOWN_NAME,
    ClientError,
    InferenceTimeout,
    InvalidPayload,
    ModelFailure,
    NotReady,
    PipelineStepFailed,
    ReportedFailure,
    StartupError,
    UnknownModel,
    quoted,
    unknown_name,
)
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings.pipelines import (
    REQUEST,
    Condition,
    Node,
    Pipeline,
    Step,
    with_shipped,
)
from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.loading import State

from .inference import Action, Answer, JSONValue, ModelRef, Payload
from .schema_fit import accepts
from .served_models import Registry
from .serving import ServingModel

logger = logging.getLogger("stevedore.pipelines")

READY, FAILED, UNCHECKED = "ready", "failed", "unchecked"
#: Outcomes of a step (``stevedore_pipeline_steps_total``) and of a pipeline call.
OK, STEP_FAILED, SKIPPED, TIMEOUT = "ok", "failed", "skipped", "timeout"
#: What a step's failure may be: a client's error, a model's, or its time-out.
STEP_ERRORS = (ClientError, ModelFailure, ReportedFailure, TimeoutError)


class Calls(Protocol):
    """What pipelines need of the inference core (``Inference``; the Ray Serve ingress's too)."""

    registry: Registry

    async def call(self, ref: ModelRef, action: Action, payload: Payload) -> Answer: ...

    def standing_for(self, ref: ModelRef) -> ModelRef: ...


@dataclass(frozen=True)
class StepRecord:
    """One step as it ran: its node, its model (None for a node), its outcome and time, its answer or error."""

    node: str
    step: str
    model: str | None
    model_version: str | None
    outcome: str
    seconds: float
    predictions: Any = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "node": self.node, "step": self.step, "model": self.model, "model_version": self.model_version,
            "outcome": self.outcome, "seconds": round(self.seconds, 6),
        }  # fmt: skip
        if self.error is not None:
            shown["error"] = self.error
        else:
            shown["predictions"] = self.predictions
        return shown


@dataclass(frozen=True)
class PipelineAnswer:
    pipeline: str
    predictions: Any
    steps: tuple[StepRecord, ...]

    def document(self, with_steps: bool = False) -> dict[str, Any]:
        """What ``POST /pipelines/NAME/predict`` answers (``steps`` with ``?steps=true``)."""
        body: dict[str, Any] = {"pipeline": self.pipeline, "model_name": self.pipeline, "predictions": self.predictions}
        if with_steps:
            body["steps"] = [record.as_dict() for record in self.steps]
        return body


@dataclass
class Entry:
    """A pipeline, its state and why; ``snapshot``: the registry's snapshot it was checked against."""

    definition: Pipeline
    source: str
    state: str = UNCHECKED
    reason: str | None = None
    snapshot: object = None


@dataclass
class Run:
    """One call of a pipeline: its input, and each step's record as it ends."""

    pipeline: Pipeline
    request: Any
    #: The length of the request's text (0: unknown): each step's payload is taken to be as large.
    size: int = 0
    #: Whether the metrics count it: not the self-test's run.
    count: bool = True
    records: list[StepRecord] = field(default_factory=list)


class Pipelines:
    """Every pipeline of a server (see the module's docstring). ``sources``: where each came from (the settings
    file, else a plugin's entry point)."""

    def __init__(
        self,
        definitions: Mapping[str, Pipeline],
        inference: Calls,
        metrics: Metrics | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.inference = inference
        self.metrics = metrics
        self.entries = {
            name: Entry(definition, (sources or {}).get(name, "the settings file"))
            for name, definition in definitions.items()
        }
        self.checking = asyncio.Lock()
        #: The pipeline metrics' children by name and labels (``child``): as many as pipelines, nodes and steps.
        self.children: dict[tuple[object, ...], Any] = {}

    @property
    def registry(self) -> Registry:
        return self.inference.registry

    def model(self, name: str, version: str | None) -> ServingModel:
        """The model a step names; for a traffic name (``[traffic.NAME]``, which its calls go to), its heaviest
        variant (``Inference.standing_for``)."""
        ref = self.inference.standing_for(ModelRef(name, version))
        return self.registry.get(ref.name, ref.version)

    def names(self) -> list[str]:
        return list(self.entries)

    def failures(self) -> list[str]:
        failed = [entry for entry in self.entries.values() if entry.state == FAILED]
        return [f"pipeline {entry.definition.name!r} failed: {entry.reason}" for entry in failed]

    # -- checking -----------------------------------------------------------

    async def check(self, names: list[str] | None = None) -> None:
        """Check ``names`` (None: every pipeline) against the models served now."""
        async with self.checking:
            for name in self.names() if names is None else names:
                entry = self.entries[name]
                entry.snapshot = self.registry.snapshot
                entry.reason = await self.problem(entry.definition)
                entry.state = READY if entry.reason is None else FAILED
                if entry.reason is None:
                    logger.info("pipeline %s ready", name)
                else:
                    logger.error("pipeline %s not served: %s", name, entry.reason)

    async def recheck(self) -> None:
        """Check again each failed pipeline whose models changed since."""
        stale = [n for n, e in self.entries.items() if e.state != READY and e.snapshot is not self.registry.snapshot]
        if stale:
            await self.check(stale)

    async def problem(self, pipeline: Pipeline) -> str | None:
        """Why ``pipeline`` cannot serve, or None."""
        problem = self.static_problem(pipeline)
        if problem is not None:
            return problem
        try:
            await self.run(pipeline, self.fixture(pipeline), count=False)
        except Exception as error:  # any failure of the self-test is the pipeline's reason, never the server's
            return f"self-test on the predict fixture of {first_model(pipeline)[0]!r} failed: {describe(error)}"
        return None

    def static_problem(self, pipeline: Pipeline) -> str | None:
        """What is wrong without running it: its name, its nodes, its models, their schemas."""
        if pipeline.name in self.registry.names():
            return f"a model is named {pipeline.name!r} too: a pipeline may not take a model's name"
        return graph_problem(pipeline) or self.models_problem(pipeline) or self.schema_problem(pipeline)

    def models_problem(self, pipeline: Pipeline) -> str | None:
        for name, version in pipeline.models():
            try:
                model = self.model(name, version)
            except ClientError as error:
                return f"step model {name + (':' + version if version else '')!r}: {error.message}"
            if model.state not in (State.READY, State.LAZY):
                return f"step model {model.name!r} version {model.version!r} is {model.state}: {model.reason}"
        return None

    def schema_problem(self, pipeline: Pipeline) -> str | None:
        """Each model whose answer a sequence hands whole to the next model: the answer's declared schema must
        be accepted by the next model's predict schema."""
        for node in pipeline.nodes.values():
            if node.type != "sequence":
                continue
            for before, after in zip(node.steps, node.steps[1:], strict=False):
                if before.model is None or after.model is None or (after.data and str(after.data) != "$response"):
                    continue
                given = self.model(before.model, before.version).loaded.output_schema
                taken = self.model(after.model, after.version).loaded.predict_validator
                problem = accepts(given, taken.schema) if given is not None and taken is not None else None
                if problem is not None:
                    return (
                        f"node {node.name!r}: the output of {before.target!r} does not fit the predict schema of "
                        f"{after.target!r}: {problem}"
                    )
        return None

    def fixture(self, pipeline: Pipeline) -> Any:
        name, version = first_model(pipeline)
        return self.model(name, version).loaded.predict_fixture

    # -- serving ------------------------------------------------------------

    async def ready(self, name: str) -> Pipeline:
        """The pipeline ``name``, ready: NotFound (UnknownModel), or NotReady with why."""
        entry = self.entry(name)
        if entry.state != READY:
            await self.recheck()
        if entry.state != READY:
            raise NotReady(f"pipeline {name!r} is not ready: {entry.reason or entry.state}")
        return entry.definition

    def entry(self, name: str) -> Entry:
        found = self.entries.get(name)
        if found is None:
            lead = f"no pipeline named {quoted(name, SHOWN_NAME)}"
            raise UnknownModel(lead, unknown_name(name, self.entries, "pipelines"))
        return found

    async def predict(self, name: str, value: Any, size: int = 0) -> PipelineAnswer:
        """Run the pipeline ``name`` on ``value`` (``size``: the length of its JSON text, where known: a large
        request's steps are validated off the event loop)."""
        return await self.run(await self.ready(name), value, size=size)

    async def run(self, pipeline: Pipeline, value: Any, count: bool = True, size: int = 0) -> PipelineAnswer:
        run = Run(pipeline, value, size, count)
        started = time.perf_counter()
        outcome = OK
        try:
            predictions = await run_node(self, run, pipeline.root, Given(value, value))
        except BaseException as error:
            outcome = TIMEOUT if getattr(error, "status_code", None) == InferenceTimeout.status_code else STEP_FAILED
            raise
        finally:
            if count and self.metrics is not None:
                self.child(self.metrics.pipeline_requests, pipeline.name, outcome).inc()
                self.child(self.metrics.pipeline_seconds, pipeline.name).observe(time.perf_counter() - started)
        return PipelineAnswer(pipeline.name, predictions, tuple(run.records))

    def counted(self, run: Run, node: Node, record: StepRecord) -> None:
        run.records.append(record)
        if run.count and self.metrics is not None:
            label = record.model or f"node:{record.step}"
            self.child(self.metrics.pipeline_steps, run.pipeline.name, node.name, label, record.outcome).inc()

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: ``labels`` checks and locks on every call, a few µs a step."""
        key = (id(metric), *labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found

    # -- describing ---------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(name) for name in self.entries]

    def describe(self, name: str) -> dict[str, Any]:
        """A pipeline's catalogue entry."""
        entry = self.entry(name)
        pipeline = entry.definition
        base = f"/pipelines/{name}"
        links = {"self": base, "predict": f"{base}/predict", "predict_schema": f"{base}/schemas/predict"}
        if self.tensor_ends(pipeline) is not None:
            links["v2_infer"] = f"/v2/models/{name}/infer"
        return {
            "name": name,
            "state": entry.state,
            "ready": entry.state == READY,
            "reason": entry.reason,
            "description": pipeline.description,
            "source": entry.source,
            "root": pipeline.root,
            "nodes": {node.name: node_document(node) for node in pipeline.nodes.values()},
            "models": [f"{model}:{version}" if version else model for model, version in pipeline.models()],
            "links": links,
        }

    def predict_schema(self, name: str) -> dict[str, Any]:
        """The first step's predict schema (what the pipeline's request must match)."""
        model, version = first_model(self.entry(name).definition)
        return self.model(model, version).schema("predict")

    def tensor_ends(self, pipeline: Pipeline) -> tuple[ModelRef, ModelRef] | None:
        """The pipeline's first and last models where both have tensor signatures (its V2 interface), else None."""
        last = last_model(pipeline)
        if last is None or graph_problem(pipeline) is not None:
            return None
        ends = ModelRef(*first_model(pipeline)), ModelRef(*last)
        try:
            served = [self.model(ref.name, ref.version) for ref in ends]
        except ClientError:
            return None
        return ends if all(model.signature is not None for model in served) else None


def build(
    tables: Mapping[str, Any],
    shipped: Mapping[str, tuple[Mapping[str, Any], PluginSource]],
    inference: Calls,
    metrics: Metrics | None = None,
) -> Pipelines:
    """The pipelines of the settings file's ``tables`` and of the plugins (``shipped``: by name, the table and
    its plugin, as ``discovery.plugin_pipelines`` gives them); the file's table of a name wins over a plugin's."""
    sources = {name: source.describe() for name, (_, source) in shipped.items() if name not in tables}
    definitions = with_shipped(tables, {name: table for name, (table, _) in shipped.items()})
    return Pipelines(definitions, inference, metrics, sources)


def check_strict(pipelines: Pipelines, strict: bool) -> None:
    """``--strict``: a failed pipeline stops the server, as a failed model does."""
    failures = pipelines.failures()
    if strict and failures:
        raise StartupError("--strict: not every pipeline is ready:\n  " + "\n  ".join(failures))


# -- the graph -------------------------------------------------------------------


#: How deep nodes may nest, and how many model steps one call may run at most. A graph past either is a mistake
#: (or a cycle by a long way round), refused at check time: not met at the first request as a RecursionError, or
#: as a request that fans out to thousands of model calls (a chain of nodes each running the next twice).
MAX_DEPTH = 32
MAX_STEPS = 1000


def graph_problem(pipeline: Pipeline) -> str | None:
    """A step naming no node, a node reaching itself, or a graph past ``MAX_DEPTH`` or ``MAX_STEPS``."""
    for node in pipeline.nodes.values():
        for step in node.steps:
            if step.node is not None and step.node not in pipeline.nodes:
                hint = unknown_name(step.node, pipeline.nodes, "nodes")
                return f"node {node.name!r}: a step names no node {step.node!r}{hint}"
    found = Shape(pipeline).of(pipeline.root, ())
    return found if isinstance(found, str) else None


@dataclass
class Shape:
    """How many model steps a call of each node runs at most, and how deep its nodes nest, found once a node
    (its nodes are shared: a graph of diamonds is not walked once per path)."""

    pipeline: Pipeline
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def of(self, name: str, path: tuple[str, ...]) -> tuple[int, int] | str:
        """``name``'s (steps, depth) reached through ``path``, or why the graph is refused. The recursion stops
        at ``MAX_DEPTH``: a deep graph is no RecursionError."""
        if name in path:
            return "its nodes form a cycle: " + " -> ".join([*path[path.index(name) :], name])
        if len(path) >= MAX_DEPTH or len(path) + self.sizes.get(name, (0, 0))[1] > MAX_DEPTH:
            return f"its nodes nest more than {MAX_DEPTH} deep, from {self.pipeline.root!r}"
        if name not in self.sizes:
            found = self.measured(self.pipeline.nodes[name], (*path, name))
            if isinstance(found, str):
                return found
            self.sizes[name] = found
        return self.sizes[name]

    def measured(self, node: Node, path: tuple[str, ...]) -> tuple[int, int] | str:
        counts, depth = [], 1
        for step in node.steps:
            found = (1, 0) if step.node is None else self.of(step.node, path)
            if isinstance(found, str):
                return found
            counts.append(found[0])
            depth = max(depth, found[1] + 1)
        steps = sum(counts) if node.type in ("sequence", "ensemble") else max(counts)  # a switch runs one
        if steps > MAX_STEPS:
            return f"a call may run {steps} model steps (node {node.name!r}), more than {MAX_STEPS}"
        return steps, depth


def first_model(pipeline: Pipeline) -> tuple[str, str | None]:
    """The model of the first step reached from the root (its predict schema and fixture are the pipeline's)."""
    node, seen = pipeline.nodes[pipeline.root], set()
    while node.steps[0].node is not None and node.name not in seen:
        seen.add(node.name)
        node = pipeline.nodes.get(node.steps[0].node, node)
    step = node.steps[0]
    if step.model is None:
        raise NotReady(f"pipeline {pipeline.name!r} starts with no model")
    return step.model, step.version


def last_model(pipeline: Pipeline) -> tuple[str, str | None] | None:
    """The model whose answer is the pipeline's, where one always is: the last step of a chain of sequences."""
    node, seen = pipeline.nodes.get(pipeline.root), set()
    while node is not None and node.type == "sequence" and node.name not in seen:
        seen.add(node.name)
        step = node.steps[-1]
        if step.model is not None and not step.soft:
            return step.model, step.version
        node = pipeline.nodes.get(step.node) if step.node is not None else None
    return None


def node_document(node: Node) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": node.type, "steps": [step.target for step in node.steps]}
    if node.reducer:
        shown["reducer"] = node.reducer
    return shown


# -- running ---------------------------------------------------------------------


@dataclass(frozen=True)
class Given:
    """What a step is handed: ``default``, what it receives unless its ``data`` says otherwise (the node's input,
    or the previous step's answer in a sequence), and ``previous``, the last answer before it (``$response``; at
    the start of the pipeline, its request)."""

    default: Any
    previous: Any


async def run_node(pipelines: Pipelines, run: Run, name: str, given: Given) -> Any:
    node = run.pipeline.nodes[name]
    return await RUNNERS[node.type](pipelines, run, node, given)


async def sequence(pipelines: Pipelines, run: Run, node: Node, given: Given) -> Any:
    previous = given.previous
    for index, step in enumerate(node.steps):
        handed = Given(given.default if index == 0 else previous, previous)
        previous = await run_step(pipelines, run, node, step, handed, previous)
    return previous


async def switch(pipelines: Pipelines, run: Run, node: Node, given: Given) -> Any:
    for step in node.steps:
        condition = step.condition
        if condition is None or holds(condition, run.request if condition.source == REQUEST else given.previous):
            return await run_step(pipelines, run, node, step, given, given.previous)
    raise InvalidPayload(f"pipeline {run.pipeline.name!r}: no step of switch node {node.name!r} takes this request")


async def splitter(pipelines: Pipelines, run: Run, node: Node, given: Given) -> Any:
    step = random.choices(node.steps, [step.weight or 0.0 for step in node.steps])[0]
    return await run_step(pipelines, run, node, step, given, given.previous)


#: An ensemble step that failed softly: left out of the merge.
PASSED_OVER = object()


async def ensemble(pipelines: Pipelines, run: Run, node: Node, given: Given) -> Any:
    tasks = [asyncio.ensure_future(run_step(pipelines, run, node, step, given, PASSED_OVER)) for step in node.steps]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # a hard step failed: the others' answers are not wanted
            task.cancel()
        raise
    merged = {step.key: answer for step, answer in zip(node.steps, answers, strict=True) if answer is not PASSED_OVER}
    if not merged:
        return given.previous
    return reduce(node, merged)


RUNNERS = {"sequence": sequence, "switch": switch, "ensemble": ensemble, "splitter": splitter}


async def run_step(pipelines: Pipelines, run: Run, node: Node, step: Step, given: Given, fallback: Any) -> Any:
    """One step's answer; a soft step's failure recorded, then ``fallback``; a hard one's raised, the step named."""
    started = time.perf_counter()
    try:
        data = data_for(run, step, given)
        if step.node is not None:  # its own steps are recorded
            work: Awaitable[Any] = run_node(pipelines, run, step.node, Given(data, given.previous))
        else:
            # The request's size for each step's: a step of a large request is validated off the event loop.
            ref = ModelRef(str(step.model), step.version)
            work = pipelines.inference.call(ref, Action.PREDICT, JSONValue(data, run.size))
        if step.timeout is not None or tracing.active():  # not on the hot path: a coroutine more to await
            work = guarded(run, step, work)
        result = await work
    except STEP_ERRORS as error:
        return passed_over(pipelines, run, node, step, error, time.perf_counter() - started, fallback)
    if step.node is not None:
        return result
    output = plain(result.result)
    model = result.model
    record = StepRecord(node.name, step.key, model.name, model.version, OK, time.perf_counter() - started, output)
    pipelines.counted(run, node, record)
    return output


async def guarded(run: Run, step: Step, work: Awaitable[Any]) -> Any:
    """``work`` within the step's time-out and its trace span."""
    async with asyncio.timeout(step.timeout):
        with tracing.span("pipeline.step", {"stevedore.pipeline": run.pipeline.name, "stevedore.step": step.key}):
            return await work


def passed_over(
    pipelines: Pipelines, run: Run, node: Node, step: Step, error: BaseException, seconds: float, fallback: Any
) -> Any:
    """A failed step: recorded, then ``fallback`` for a soft one; raised as the pipeline's for a hard one."""
    timed_out = isinstance(error, (TimeoutError, InferenceTimeout))
    outcome = TIMEOUT if timed_out else SKIPPED if step.soft else STEP_FAILED
    message = f"timed out after {step.timeout:g} s" if isinstance(error, TimeoutError) else describe(error)
    if step.node is None or step.soft:  # a failed node's own steps are recorded already
        record = StepRecord(node.name, step.key, step.model, step.version, outcome, seconds, error=message)
        pipelines.counted(run, node, record)
    if step.soft:
        logger.warning("pipeline %s: soft step %s passed over: %s", run.pipeline.name, step.key, message)
        return fallback
    raise step_failure(run, node, step, error, message) from error


def step_failure(run: Run, node: Node, step: Step, error: BaseException, message: str) -> BaseException:
    """A hard step's failure as the pipeline's: the step's own status (504 for its time-out), the step named."""
    if isinstance(error, PipelineStepFailed | ModelFailure | ReportedFailure):
        return error  # a step of a node named itself already (a model's failure names its model: a 500)
    where = f"pipeline {run.pipeline.name!r}, node {node.name!r}, step {step.key!r}"
    if isinstance(error, TimeoutError):
        return PipelineStepFailed(f"{where}: {message}", None, InferenceTimeout.status_code)
    if isinstance(error, ClientError):
        return PipelineStepFailed(f"{where}: {error.message}", error.details, error.status_code, error.headers)
    return error


def data_for(run: Run, step: Step, given: Given) -> Any:
    """What ``step`` receives: its ``data`` (``$request``, ``$response`` or a pointer into either), else
    ``given.default``."""
    if step.data is None:
        return given.default
    source = run.request if step.data.source == REQUEST else given.previous
    if not step.data.pointer:
        return source
    found = resolve(source, step.data.pointer)
    if found is MISSING:
        raise InvalidPayload(f"its data {str(step.data)!r} is not in the {step.data.source[1:]}")
    return found


#: A JSON pointer that leads nowhere.
MISSING = object()


#: An array index of a JSON pointer (RFC 6901): ASCII digits, no leading zero.
ARRAY_INDEX = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")


def resolve(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901) in ``document``, or ``MISSING``."""
    current = document
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(current, Mapping) and key in current:
            current = current[key]
        elif isinstance(current, (list, tuple)) and ARRAY_INDEX.match(key) and int(key) < len(current):
            current = current[int(key)]
        else:
            return MISSING
    return current


def holds(condition: Condition, document: Any) -> bool:
    """Whether ``condition`` holds of ``document``: a value that is missing, or that does not compare with the
    condition's (a string with a number), does not."""
    found = resolve(document, condition.pointer)
    if found is MISSING:
        return False
    try:
        return bool(COMPARISONS[condition.op](found, condition.value))
    except TypeError:
        return False


def equal(found: Any, expected: Any) -> bool:
    """Equal as JSON values are: ``true`` is not ``1``, as Python's ``True == 1`` would have it."""
    return isinstance(found, bool) == isinstance(expected, bool) and bool(found == expected)


def ordered(found: Any, expected: Any) -> bool:
    """Whether the two compare by order: a boolean with a boolean only (``true > 0`` is a TypeError to ``holds``)."""
    if isinstance(found, bool) != isinstance(expected, bool):
        raise TypeError("a boolean compares by order with a boolean only")
    return True


COMPARISONS: dict[str, Any] = {
    "==": equal,
    "!=": lambda a, b: not equal(a, b),
    "<": lambda a, b: ordered(a, b) and a < b,
    "<=": lambda a, b: ordered(a, b) and a <= b,
    ">": lambda a, b: ordered(a, b) and a > b,
    ">=": lambda a, b: ordered(a, b) and a >= b,
    "in": lambda a, b: any(equal(a, item) for item in b),
}


def reduce(node: Node, answers: dict[str, Any]) -> Any:
    """An ensemble's answers merged: by step key (no reducer), or combined row by row."""
    if node.reducer is None:
        return answers
    values = list(answers.values())
    try:
        if node.reducer == "mean":
            return mean(values)
        if node.reducer == "vote":
            return vote(values)
        return concatenate(values)
    except (TypeError, ValueError) as error:
        problem = f"node {node.name!r}: its steps' answers cannot be combined by {node.reducer}: {error}"
        raise InvalidPayload(problem) from error


def mean(values: list[Any]) -> Any:
    """The answers' mean, item by item: of numbers only (``dtype=float`` would make ``"1.5"`` 1.5, ``null`` NaN)."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError("they are not all numbers of the same shape")
    return np.mean(array, axis=0, dtype=float).tolist()


def vote(values: list[Any]) -> Any:
    """The most common answer row by row (ties: the first step's of them); answers of one item: that item's."""
    if not all(isinstance(value, list) for value in values):
        return most_common(values)
    if len({len(value) for value in values}) != 1:
        raise ValueError("the answers have different numbers of rows")
    return [most_common(list(row)) for row in zip(*values, strict=True)]


def most_common(items: list[Any]) -> Any:
    counts = Counter(repr(item) for item in items)
    best = max(counts.values())
    return next(item for item in items if counts[repr(item)] == best)


def concatenate(values: list[Any]) -> Any:
    """The answers side by side, row by row: each row's items (or item) of each step in step order, each as it
    is (not made one type, as a NumPy array of numbers and strings would)."""
    if not all(isinstance(value, list) for value in values) or len({len(value) for value in values}) != 1:
        raise ValueError("the answers are not lists of as many rows")
    return [[item for row in rows for item in items(row)] for rows in zip(*values, strict=True)]


def items(row: Any) -> list[Any]:
    return row if isinstance(row, list) else [row]


def plain(result: Any) -> Any:
    """A model's answer as JSON values, to hand to the next step (arrays as lists)."""
    if isinstance(result, list):  # the most common answer, taken as it is: its items are the model's JSON
        return result
    if isinstance(result, np.ndarray):
        return result.tolist()
    if isinstance(result, np.generic):
        return result.item()
    if isinstance(result, Mapping):
        return {key: plain(value) for key, value in result.items()}
    if isinstance(result, tuple):
        return [plain(value) for value in result]
    return result


def describe(error: BaseException) -> str:
    """An error as a step's record and a failed pipeline's reason say it (a model's failure: not its text)."""
    if isinstance(error, ClientError):
        return error.summary()
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
