"""How one model's calls run: on its threads within its admission bound, on the event loop when the inline
policy allows, merged into batches when the model batches. One ``ModelRuntime`` a model, made when its
serving state is built; each of the three mechanisms is a module of its own (``admission``, ``inline``,
``batching``), and this one only chooses between them."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from stevedore_server.base.errors import ClientError, ModelFailure
from stevedore_server.base.metrics import Metrics, ModelMetrics
from stevedore_server.base.settings import ModelLimits
from stevedore_server.plugins.loading import LoadedModel

from .admission import Admission, ModelThreads, StopsCalls
from .batching import BatchCall, Batcher, Batchers
from .deadlines import current as current_bound
from .inline import CallCost, InlinePolicy
from .statistics import ModelStatistics, Timing, current, rows_or_one, timed_thread_call

logger = logging.getLogger("stevedore.runtime")

#: Batchers of one kind a model keeps at most (sets of outputs, sets of ``embed`` parameters): ``Batchers``.
MAX_KEYED_BATCHERS = 32
#: ``embed`` parameters that do not keep requests apart: a merged call is made without them (each client's own
#: ``user`` would otherwise batch nobody with anybody).
UNBATCHED_PARAMETERS = frozenset({"user"})


class Runtime(Protocol):
    """How a model's calls run: ``ModelRuntime`` here; a Ray Serve deployment's (``rayserve.forwarding``) there."""

    @property
    def idle(self) -> bool:
        """Nothing in flight: the runtime can be closed."""
        ...

    #: The predictor computes only the V2 outputs asked (``Predictor.predict_outputs``): ``call_outputs``.
    chooses_outputs: bool
    #: Its calls' statistics, as this process sees them (``statistics``).
    statistics: ModelStatistics

    async def call(self, action: str, payload: Any, rows: int | None) -> Any:
        """``action`` on a valid ``payload`` (``rows`` rows, or None where it is not rows)."""
        ...

    async def call_outputs(self, payload: Any, rows: int | None, names: tuple[str, ...]) -> Any:
        """A predict computing the outputs ``names`` only (``Predictor.predict_outputs``)."""
        ...

    def close(self, unload_aside: bool = False) -> None:
        """Stop; ``unload_aside``: the predictor's ``unload`` runs on a thread of its own, not the caller's (a
        model replaced while serving is closed on the event loop, which an unload that waits must not hold)."""
        ...


class ModelRuntime:
    """One model's threads, admission, inline policy and batcher; created inside the event loop."""

    def __init__(
        self, model: LoadedModel, limits: ModelLimits, metrics: Metrics | None = None, cost: CallCost | None = None
    ) -> None:
        self.model = model
        self.limits = limits
        self.metrics = ModelMetrics(metrics, model.name, model.version)
        self.threads = ModelThreads(model.name, limits.max_concurrency)
        self.admission = Admission(f"model {model.name!r} version {model.version!r}", limits, self.metrics)
        if limits.cancel == "kill" and isinstance(model.predictor, StopsCalls):
            self.admission.stopper = model.predictor
        label = f"model {model.name} version {model.version}"
        self.inline = InlinePolicy(label, cost, limits.inline_budget) if cost and limits.inline_budget > 0 else None
        self.statistics = ModelStatistics()
        self.batcher = self._batcher() if limits.max_batch_size > 1 else None
        # A batched model's requests count their rows as inferences, as Triton counts a request's batch.
        self.statistics.rows_are_inferences = self.batcher is not None
        #: The predictor computes only the V2 outputs asked (``Predictor.predict_outputs``): ``call_outputs``.
        self.chooses_outputs = model.predictor.has_predict_outputs
        #: A batcher for each set of outputs asked of ``predict_outputs``: a batch is one call, of one set.
        self.output_batchers = Batchers(self._output_batcher, MAX_KEYED_BATCHERS)
        #: A batcher for each set of parameters of ``embed`` (``embed_batcher``): a batch is one call, of one set.
        self.embed_batchers = Batchers(self._embed_batcher, MAX_KEYED_BATCHERS)
        #: The ``max_concurrency`` places of text generations, each held from the model's call to the generation's
        #: end (``text``): its pieces are one thread call each, which must not interleave with another's.
        self.generating = asyncio.Semaphore(limits.max_concurrency)

    def _batcher(self) -> Batcher | None:
        model = self.model
        if not model.row_aligned or model.schema("predict").get("type") != "array":
            logger.warning(
                "model %s version %s is served unbatched: its self-test did not show one output item a row",
                model.name, model.version,
            )  # fmt: skip
            return None
        call = self._batch_call(model.predictor.predict)
        return Batcher(model.name, model.version, self.limits, call, self.metrics, self.statistics)

    def _output_batcher(self, names: tuple[str, ...]) -> Batcher:
        call = self._batch_call(functools.partial(self.model.predictor.predict_outputs, names=names))
        return Batcher(self.model.name, self.model.version, self.limits, call, self.metrics, self.statistics)

    def _embed_batcher(self, params: dict[str, Any]) -> Batcher:
        embed = self.model.predictor.embed
        call = self._batch_call(lambda texts: embed(texts, params), "embed")
        model, limits = self.model, self.limits
        return Batcher(model.name, model.version, limits, call, self.metrics, self.statistics, action="embed")

    @property
    def idle(self) -> bool:
        """Nothing admitted and no thread busy: the runtime can be closed."""
        return self.admission.admitted == 0 and not self.threads.busy

    async def call(self, action: str, payload: Any, rows: int | None) -> Any:
        """``action`` on a valid ``payload`` (``rows`` rows, or None where it is not rows)."""
        if action == "predict" and rows is not None and self.batcher is not None:
            return await self.admission.run(action, self.batcher.submit(payload))
        method = self.model.predictor.predict if action == "predict" else self.model.predictor.score
        policy = self._inline_policy(rows) if action == "predict" else None
        if policy is not None and rows is not None:
            self._check_deadline(action)
            return self._inline(policy, action, method, payload, rows)
        return await self.admission.run(action, self._in_thread(action, method, payload, rows, current()))

    async def call_outputs(self, payload: Any, rows: int | None, names: tuple[str, ...]) -> Any:
        """A predict through ``Predictor.predict_outputs``, computing the outputs ``names`` (a predictor that
        overrides it: ``chooses_outputs``), as ``call`` runs a predict; batched with requests asking the same."""
        batcher = self.output_batchers.get(names, names) if rows is not None and self.batcher is not None else None
        if batcher is not None:
            return await self.admission.run("predict", batcher.submit(payload))
        method = functools.partial(self.model.predictor.predict_outputs, names=names)
        policy = self._inline_policy(rows)
        if policy is not None and rows is not None:
            self._check_deadline("predict")
            return self._inline(policy, "predict", method, payload, rows)
        return await self.admission.run("predict", self._in_thread("predict", method, payload, rows, current()))

    async def embed(self, texts: list[str], params: dict[str, Any]) -> Any:
        """``Predictor.embed`` of ``texts`` on the model's threads within its bound; merged with the requests of the
        same parameters waiting while it is busy, where it batches (a merged call serves several clients: it is
        given their parameters without ``user``, which is not the same for them all)."""
        batcher = self.embed_batcher(params) if self.limits.max_batch_size > 1 else None
        if batcher is not None:
            return await self.admission.run("embed", batcher.submit(texts))
        embed = self.model.predictor.embed
        call = self._in_thread("embed", lambda rows: embed(rows, params), texts, len(texts), current())
        return await self.admission.run("embed", call)

    def embed_batcher(self, params: dict[str, Any]) -> Batcher | None:
        """The batcher of ``embed`` calls of ``params`` but ``user`` (``UNBATCHED_PARAMETERS``); None while
        ``MAX_KEYED_BATCHERS`` other sets are all busy: the call then runs unbatched."""
        shared = {key: value for key, value in params.items() if key not in UNBATCHED_PARAMETERS}
        return self.embed_batchers.get(json.dumps(shared, sort_keys=True, default=str), shared)

    def _check_deadline(self, action: str) -> None:
        """A call about to run on the event loop, whose request's deadline passed already: 504, never run."""
        bound = current_bound()
        remaining = None if bound is None else bound.remaining()
        if bound is not None and remaining is not None and remaining <= 0:
            raise self.admission.expired(action, bound)

    def runs_inline(self, rows: int) -> bool:
        """Whether a predict of ``rows`` rows would run on the event loop now."""
        return self._inline_policy(rows) is not None

    def _inline_policy(self, rows: int | None) -> InlinePolicy | None:
        """The inline policy if this call of ``rows`` rows runs on the loop; never while a thread is busy."""
        policy = self.inline
        if policy is None or rows is None or self.threads.busy or not policy.allows(rows):
            return None
        return policy

    def _inline(self, policy: InlinePolicy, action: str, method: Callable[[Any], Any], payload: Any, rows: int) -> Any:
        started = time.perf_counter()
        begun = time.perf_counter_ns()
        try:
            result = policy.call(method, payload, rows)
        except ClientError:
            raise
        except Exception as error:
            self.metrics.count_error(action, "error")
            raise ModelFailure(self.model.name, self.model.version, action, error) from error
        self.metrics.observe(action, started)
        self._timed_inline(begun, rows)
        return result

    def _timed_inline(self, begun: int, rows: int) -> None:
        """Count a call run on the event loop: no queue, its compute."""
        timing = current()
        if timing is not None:
            took = time.perf_counter_ns() - begun
            timing.infer += took
            timing.executed = True
            self.statistics.executed(rows_or_one(rows, self.statistics), 0, took, 0)

    async def _in_thread(
        self,
        action: str,
        method: Callable[[Any], Any],
        payload: Any,
        rows: int | None = None,
        timing: Timing | None = None,
    ) -> Any:
        """``method(payload)`` on the model's threads; with the request's ``timing`` (not for a batch, which the
        batcher times), its queue and compute counted."""
        if timing is not None:
            timing.queued = time.perf_counter_ns()
            method = functools.partial(timing.run, method)
        try:
            result = await self.threads.call(method, payload)
        except ClientError:
            raise
        except Exception as error:
            raise ModelFailure(self.model.name, self.model.version, action, error) from error
        timed_thread_call(timing, self.statistics, rows)
        return result

    def _batch_call(self, method: Callable[[Any], Any], action: str = "predict") -> BatchCall:
        """What a batcher calls to run a merged batch through ``method`` (``predict``, ``predict_outputs`` of
        one set of outputs, or ``embed``): inline where the policy allows (a predict), else on the model's
        threads."""

        async def call(rows: Any) -> Any:
            policy = self._inline_policy(len(rows)) if action == "predict" else None
            if policy is not None:
                try:
                    return policy.call(method, rows, len(rows))
                except Exception as error:
                    raise ModelFailure(self.model.name, self.model.version, action, error) from error
            return await self._in_thread(action, method, rows)

        return call

    def close(self, unload_aside: bool = False) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.output_batchers.stop()
        self.embed_batchers.stop()
        self.threads.close()
        if unload_aside:
            name = f"unload {self.model.name} {self.model.version}"
            threading.Thread(target=self.unload, name=name, daemon=True).start()
        else:
            self.unload()

    def unload(self) -> None:
        try:
            self.model.predictor.unload()
        except Exception as error:
            logger.error("model %s version %s: unload() raised", self.model.name, self.model.version, exc_info=error)
