"""Adaptive batching: predict requests that wait while a model is busy are merged into one model call.

With ``max_batch_size`` above 1, the rows of the waiting requests are
concatenated, the model is called once, and its result is split back, each
caller getting exactly its own rows; a caller that is gone (its client left,
its deadline passed) before its batch begins is left out of it. Only a model
whose self-test showed one output item a row (of each output, for a dict of
outputs by name) is batched; a batch result of another length fails that
batch with a clear message (the model's error, a 500). A model batches each kind of call apart (predict, each set of
outputs of ``predict_outputs``, each set of ``embed`` parameters): ``Batchers`` keeps a batcher a kind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base import tracing
from stevedore_server.base.errors import ClientError, ModelFailure
from stevedore_server.base.metrics import ModelMetrics
from stevedore_server.base.settings import ModelLimits

from .deadlines import BOUND, Bound
from .deadlines import current as current_bound
from .statistics import ModelStatistics, Timing, current

#: Runs one merged batch (on the loop or a thread, as the model's runtime decides); raises ModelFailure.
BatchCall = Callable[[Any], Awaitable[Any]]


@dataclass
class Pending:
    rows: list[Any] | np.ndarray[Any, Any]
    future: asyncio.Future[Any]
    arrived: float
    #: The request's timing (``statistics``): its queue and the batch's compute are counted in it.
    timing: Timing | None = None
    #: While tracing: the request's span, which the batch's span links to (and back), and when it began to wait.
    origin: Any = None
    queued_ns: int = 0
    #: The request's bound (``deadlines``): marked begun when its batch begins.
    bound: Bound | None = None


class Batcher:
    """Merges waiting predict requests into one model call per free thread.

    A batch closes when it is full or when its oldest request has waited
    ``max_batch_time``; requests that arrive while every thread is busy wait
    together for the next one. The cost a request adds is a future and an
    append: the collector wakes once a batch, not once a request.
    """

    def __init__(
        self,
        name: str,
        version: str,
        limits: ModelLimits,
        call: BatchCall,
        metrics: ModelMetrics,
        statistics: ModelStatistics | None = None,
        action: str = "predict",
    ) -> None:
        self.name, self.version = name, version
        #: What a failure of its batches is labelled (``ModelFailure``'s action): predict, or embed.
        self.action = action
        self.limits = limits
        self.call = call
        self.metrics = metrics
        self.statistics = statistics or ModelStatistics(rows_are_inferences=True)
        self.waiting: collections.deque[Pending] = collections.deque()
        self.arrived = asyncio.Event()  # set while requests wait
        self.full = asyncio.Event()  # set while a full batch waits
        self.free = asyncio.Semaphore(limits.max_concurrency)
        self.task: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def submit(self, rows: list[Any] | np.ndarray[Any, Any]) -> Any:
        if self.task is None:
            self.task = asyncio.create_task(self._collect())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        timing = current()
        if timing is not None:
            timing.queued = time.perf_counter_ns()
        pending = Pending(rows, future, loop.time(), timing, bound=current_bound())
        if tracing.active():
            pending.origin, pending.queued_ns = tracing.current(), time.time_ns()
        self.waiting.append(pending)
        self.arrived.set()
        if len(self.waiting) >= self.limits.max_batch_size:
            self.full.set()
        return await future  # cancelled by a time-out or a client gone: the batch skips it

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    @property
    def idle(self) -> bool:
        """No caller waits and no batch runs: stopping it now loses nobody's call."""
        return not self.waiting and not self.running

    async def _collect(self) -> None:
        # Made by the first caller's task, this task has its context: no batch is that caller's.
        BOUND.set(None)
        while True:
            await self.free.acquire()
            batch = await self._next_batch()
            task = asyncio.create_task(self._run(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _next_batch(self) -> list[Pending]:
        limits = self.limits
        while not self._live_head():
            self.full.clear()
            self.arrived.clear()
            await self.arrived.wait()
        remaining = self.waiting[0].arrived + limits.max_batch_time - asyncio.get_running_loop().time()
        if not self.full.is_set() and remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.full.wait()
        batch: list[Pending] = []
        while self.waiting and len(batch) < limits.max_batch_size:  # only the callers still waiting
            pending = self.waiting.popleft()
            if not pending.future.done():
                batch.append(pending)
        if len(self.waiting) < limits.max_batch_size:
            self.full.clear()
        if not self.waiting:
            self.arrived.clear()
        return batch

    def _live_head(self) -> bool:
        """Whether a caller still waits, the callers gone at the head of the queue dropped."""
        while self.waiting and self.waiting[0].future.done():
            self.waiting.popleft()
        return bool(self.waiting)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            if not batch:
                return
            self.metrics.batch(len(batch))
            for pending in batch:  # from here on, each caller's rows run whatever becomes of the caller
                if pending.bound is not None:
                    pending.bound.started = True
            failure = await self._attempt(batch)
            if isinstance(failure, ClientError) and len(batch) > 1:
                # Whose rows the model refused (an embed's text) is not known: each caller's run alone, so that a
                # refusal reaches its own caller only. (A parameter refused is every caller's: they share them.)
                for pending in batch:
                    alone = await self._attempt([pending])
                    if alone is not None:
                        self._fail([pending], alone)
            elif failure is not None:
                self._fail(batch, failure)
        finally:
            self.free.release()

    async def _attempt(self, batch: list[Pending]) -> ModelFailure | ClientError | None:
        """``batch`` run as one call, each caller handed its part; the failure if it failed (no caller told)."""
        try:
            with self._span(batch):
                started = time.perf_counter_ns()
                merged = merge([pending.rows for pending in batch])
                called = time.perf_counter_ns()
                result = await self.call(merged)
                returned = time.perf_counter_ns()
                parts = split(result, [len(pending.rows) for pending in batch])
            self._timed(batch, len(merged), (started, called, returned, time.perf_counter_ns()))
        except (ModelFailure, ClientError) as failed:
            return failed
        except (TypeError, ValueError) as error:  # merge or split: the batch's result is not one item a row
            junk = ModelFailure(self.name, self.version, self.action, error)
            junk.__cause__ = error
            return junk
        for pending, part in zip(batch, parts, strict=True):
            if not pending.future.done():
                pending.future.set_result(part)
        return None

    def _span(self, batch: list[Pending]) -> contextlib.AbstractContextManager[Any]:
        """While tracing, the batch's span, linked to each request's span and each of those to it; each request's
        wait for the batch is its "admission" span. It serves several requests, so it is the child of the first
        sampled one (the sampler's decision for that trace covers it): none sampled, none is made."""
        if not tracing.active():
            return NO_SPAN
        origins = [pending.origin for pending in batch if pending.origin is not None]
        parent = next((origin for origin in origins if tracing.sampled(origin)), None)
        if origins and parent is None:  # the model's spans stay in an unsampled request's trace: not exported
            return tracing.within(origins[0])
        attributes = {
            "stevedore.model.name": self.name,
            "stevedore.model.version": self.version,
            "stevedore.batch.size": len(batch),
            "stevedore.batch.rows": sum(len(pending.rows) for pending in batch),
        }
        links = [tracing.link(pending.origin) for pending in batch]
        one = tracing.span("batch", attributes, root=parent is None, parent=parent, links=links)
        return _linked_back(one, batch)

    def _timed(self, batch: list[Pending], rows: int, times: tuple[int, int, int, int]) -> None:
        """Count the batch's execution, and in each request's timing its queue (from its submission to the merge)
        and the batch's compute: its merge as input, the model's call, its split as output."""
        started, called, returned, ended = times
        self.statistics.executed(rows, called - started, returned - called, ended - returned)
        for pending in batch:
            timing = pending.timing
            if timing is not None:
                timing.queue += started - timing.queued
                timing.input += called - started
                timing.infer += returned - called
                timing.output += ended - returned
                timing.executed = True

    @staticmethod
    def _fail(batch: list[Pending], failure: ModelFailure | ClientError) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(failure)


NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class Batchers:
    """A model's batchers by key (a set of outputs asked, a set of ``embed`` parameters): made on first use, at
    most ``size`` of them, an idle one stopped to make room for a new key (so that keys seen once, each client's
    own parameters say, never fill the table for good)."""

    def __init__(self, make: Callable[[Any], Batcher], size: int) -> None:
        #: Makes the batcher of a key.
        self.make = make
        self.size = size
        self.by_key: dict[Hashable, Batcher] = {}

    def get(self, key: Hashable, argument: Any) -> Batcher | None:
        """The batcher of ``key`` (made of ``argument`` if new); None while ``size`` others are all busy: the
        call then runs unbatched."""
        batcher = self.by_key.get(key)
        if batcher is None and self.room():
            batcher = self.by_key[key] = self.make(argument)
        return batcher

    def room(self) -> bool:
        """Whether a new key fits, idle batchers stopped and dropped to make room if it did not."""
        if len(self.by_key) < self.size:
            return True
        for key, batcher in list(self.by_key.items()):
            if batcher.idle:
                batcher.stop()
                del self.by_key[key]
        return len(self.by_key) < self.size

    def stop(self) -> None:
        for batcher in self.by_key.values():
            batcher.stop()


@contextlib.contextmanager
def _linked_back(span: contextlib.AbstractContextManager[Any], batch: list[Pending]) -> Iterator[Any]:
    """``span`` (the batch's), each request's span linked to it and each request's wait recorded in its trace."""
    with span as batch_span:
        begun = time.time_ns()
        for pending in batch:
            tracing.record("admission", pending.queued_ns, begun, parent=pending.origin)
            tracing.add_link(pending.origin, batch_span)
        yield batch_span


def merge(parts: list[Any]) -> Any:
    """The rows of several requests as one payload: one array if all are arrays of one row shape, else a list."""
    if all(isinstance(part, np.ndarray) for part in parts) and len({part.shape[1:] for part in parts}) == 1:
        return np.concatenate(parts)
    return [row for part in parts for row in (part.tolist() if isinstance(part, np.ndarray) else part)]


def split(result: Any, sizes: list[int]) -> list[Any]:
    """A batch's result cut back into each request's rows; the model must give one item a row (of each of its
    outputs, for a dict of outputs by name)."""
    if isinstance(result, dict):
        by_output = {name: split(value, sizes) for name, value in result.items()}
        return [{name: parts[index] for name, parts in by_output.items()} for index in range(len(sizes))]
    if not hasattr(result, "__len__") or not hasattr(result, "__getitem__") or isinstance(result, (str, dict)):
        raise TypeError(f"a batched model must return one item a row, got {type(result).__name__}")
    if len(result) != sum(sizes):
        raise ValueError(
            f"the batched model returned {len(result)} items for {sum(sizes)} rows; a batched model must give "
            "one item a row"
        )
    parts, start = [], 0
    for size in sizes:
        parts.append(result[start : start + size])
        start += size
    return parts
