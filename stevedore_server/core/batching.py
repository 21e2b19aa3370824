"""Adaptive batching: predict requests that wait while a model is busy are merged into one model call.

With ``max_batch_size`` above 1, the rows of the waiting requests are
concatenated, the model is called once, and its result is split back, each
caller getting exactly its own rows. Only a model whose self-test showed one
output item a row (of each output, for a dict of outputs by name) is batched;
a batch result of another length fails that batch with a clear message (the
model's error, a 500).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base.errors import ModelFailure
from stevedore_server.base.metrics import ModelMetrics
from stevedore_server.base.settings import ModelLimits

#: Runs one merged batch (on the loop or a thread, as the model's runtime decides); raises ModelFailure.
BatchCall = Callable[[Any], Awaitable[Any]]


@dataclass
class Pending:
    rows: list[Any] | np.ndarray[Any, Any]
    future: asyncio.Future[Any]
    arrived: float


class Batcher:
    """Merges waiting predict requests into one model call per free thread.

    A batch closes when it is full or when its oldest request has waited
    ``max_batch_time``; requests that arrive while every thread is busy wait
    together for the next one. The cost a request adds is a future and an
    append: the collector wakes once a batch, not once a request.
    """

    def __init__(self, name: str, version: str, limits: ModelLimits, call: BatchCall, metrics: ModelMetrics) -> None:
        self.name, self.version = name, version
        self.limits = limits
        self.call = call
        self.metrics = metrics
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
        self.waiting.append(Pending(rows, future, loop.time()))
        self.arrived.set()
        if len(self.waiting) >= self.limits.max_batch_size:
            self.full.set()
        return await future  # cancelled by a time-out or a client gone: the batch skips it

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _collect(self) -> None:
        while True:
            await self.free.acquire()
            batch = await self._next_batch()
            task = asyncio.create_task(self._run(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _next_batch(self) -> list[Pending]:
        limits = self.limits
        await self.arrived.wait()
        remaining = self.waiting[0].arrived + limits.max_batch_time - asyncio.get_running_loop().time()
        if not self.full.is_set() and remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.full.wait()
        batch = [self.waiting.popleft() for _ in range(min(limits.max_batch_size, len(self.waiting)))]
        if len(self.waiting) < limits.max_batch_size:
            self.full.clear()
        if not self.waiting:
            self.arrived.clear()
        return [pending for pending in batch if not pending.future.done()]

    async def _run(self, batch: list[Pending]) -> None:
        try:
            if not batch:
                return
            self.metrics.batch(len(batch))
            try:
                result = await self.call(merge([pending.rows for pending in batch]))
                parts = split(result, [len(pending.rows) for pending in batch])
            except ModelFailure as failed:
                self._fail(batch, failed)
                return
            except (TypeError, ValueError) as error:  # merge or split: the batch's result is not one item a row
                junk = ModelFailure(self.name, self.version, "predict", error)
                junk.__cause__ = error
                self._fail(batch, junk)
                return
            for pending, part in zip(batch, parts, strict=True):
                if not pending.future.done():
                    pending.future.set_result(part)
        finally:
            self.free.release()

    @staticmethod
    def _fail(batch: list[Pending], failure: ModelFailure) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(failure)


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
