"""Running inferences: per-model threads, a bounded queue, time-outs, and adaptive batching.

Each model gets its own worker threads (``max_concurrency``), so a slow model
never holds another's. Requests beyond the threads wait, up to ``max_queue``;
beyond that they are refused at once (503 with Retry-After) instead of piling
up in memory. An inference that outlives ``timeout`` answers 504; its thread is
abandoned to finish on its own, and the server stays responsive.

With ``max_batch_size`` above 1, predict requests queued while the model is
busy are merged into one model call (rows concatenated) and the result split
back, each caller getting exactly its own rows.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio

from .errors import ClientError, ModelFailure, StevedoreError
from .metrics import Metrics
from .predictor import Predictor
from .registry import ModelEntry, require_validator
from .settings import Settings

logger = logging.getLogger("stevedore.runtime")

RETRY_AFTER_SECONDS = 1


class Overloaded(ClientError):
    """The model's queue is full: try again shortly."""

    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}  # noqa: RUF012  (read-only)


class InferenceTimeout(StevedoreError):
    """An inference outlived its time-out: a 504."""


@dataclass(frozen=True)
class ModelLimits:
    """One model's effective settings: its ``[models.NAME]`` table, else the predictor's, else the server's."""

    max_batch_size: int
    max_batch_time: float
    timeout: float
    max_concurrency: int
    max_queue: int

    @classmethod
    def of(cls, settings: Settings, predictor: Predictor) -> ModelLimits:
        own = settings.for_model(predictor.name)

        def pick(value: Any, fallback: Any) -> Any:
            return fallback if value is None else value

        return cls(
            max_batch_size=pick(own.max_batch_size, predictor.max_batch_size),
            max_batch_time=pick(own.max_batch_time, predictor.max_batch_time),
            timeout=pick(own.timeout, settings.timeout),
            max_concurrency=pick(own.max_concurrency, settings.max_concurrency),
            max_queue=pick(own.max_queue, settings.max_queue),
        )


class ModelRuntime:
    """How one model's inferences run; created in the app's lifespan, inside the event loop."""

    def __init__(self, entry: ModelEntry, limits: ModelLimits, metrics: Metrics | None = None) -> None:
        self.entry = entry
        self.limits = limits
        self.metrics = metrics
        # A plain executor: its hop costs about 40 µs here against AnyIO's 60, which matters for fast models.
        self.threads = ThreadPoolExecutor(limits.max_concurrency, thread_name_prefix=f"model-{entry.name}")
        self.admitted = 0
        self.samples: dict[str, tuple[Any, Any]] = {}
        self.batcher = Batcher(self) if limits.max_batch_size > 1 and batchable(entry) else None

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running (a batch holds several) plus waiting."""
        return self.limits.max_concurrency * self.limits.max_batch_size + self.limits.max_queue

    async def run(self, action: str, method: Callable[[Any], Any], payload: Any) -> Any:
        """``method(payload)`` on this model's threads, within its queue bound and time-out."""
        return await self._admitted(action, self._in_thread(action, method, payload))

    async def predict(self, payload: Any) -> Any:
        """Validate, then predict: merged with other requests where the model batches."""
        if self.batcher is None:
            return await self.run("predict", self.entry.predict, payload)
        require_validator(self.entry.predict_validator).validate(payload)  # a bad request never joins a batch
        return await self._admitted("predict", self.batcher.submit(payload))

    async def _admitted(self, action: str, work: Coroutine[Any, Any, Any]) -> Any:
        if self.admitted >= self.capacity:
            work.close()
            self.count_error(action, "overloaded")
            raise Overloaded(
                f"model {self.entry.name!r} has {self.admitted} inferences running or waiting; try again shortly"
            )
        self.admitted += 1
        started = time.perf_counter()
        try:
            with anyio.move_on_after(self.limits.timeout):
                result = await work
                self.observe(action, started)
                return result
        except ModelFailure:
            self.count_error(action, "error")
            raise
        finally:
            self.admitted -= 1
        # Reached only when the time-out cancelled the work.
        self.count_error(action, "timeout")
        logger.warning("model %s version %s: %s timed out", self.entry.name, self.entry.version, action)
        model = f"model {self.entry.name!r} version {self.entry.version!r}"
        raise InferenceTimeout(f"{model} did not {action} within {self.limits.timeout:g} s")

    def observe(self, action: str, started: float) -> None:
        if self.metrics is None:
            return
        samples = self.samples.get(action)
        if samples is None:
            labels = (self.entry.name, self.entry.version, action)
            samples = self.metrics.inferences.labels(*labels), self.metrics.inference_seconds.labels(*labels)
            self.samples[action] = samples
        samples[0].inc()
        samples[1].observe(time.perf_counter() - started)

    def count_error(self, action: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.inference_errors.labels(self.entry.name, self.entry.version, action, kind).inc()

    def in_thread(self, method: Callable[[Any], Any], payload: Any) -> asyncio.Future[Any]:
        """``method(payload)`` on this model's threads, with the request's context (its id for the log).

        Cancelling the future (a time-out) abandons the thread to finish on its own.
        """
        context = contextvars.copy_context()
        return asyncio.get_running_loop().run_in_executor(self.threads, context.run, method, payload)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.threads.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, action: str, method: Callable[[Any], Any], payload: Any) -> Any:
        try:
            return await self.in_thread(method, payload)
        except (ClientError, ModelFailure):
            raise
        except Exception as error:
            raise ModelFailure(self.entry.name, self.entry.version, action, error) from error


def batchable(entry: ModelEntry) -> bool:
    schema = entry.predict_validator.schema if entry.predict_validator else {}
    if schema.get("type") != "array" or not entry.predictor.row_aligned:
        logger.warning("model %s: batching is off, its predict payload and output are not rows", entry.name)
        return False
    return True


@dataclass
class Pending:
    rows: list[Any]
    future: asyncio.Future[Any]


class Batcher:
    """Merges queued predict requests into one model call per free thread."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.free = asyncio.Semaphore(runtime.limits.max_concurrency)
        self.task: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def submit(self, rows: list[Any]) -> Any:
        if self.task is None:
            self.task = asyncio.create_task(self._collect())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Pending(rows, future))
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
        limits = self.runtime.limits
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + limits.max_batch_time
        while len(batch) < limits.max_batch_size:
            if self.queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self.queue.get_nowait())
        return [pending for pending in batch if not pending.future.done()]

    async def _run(self, batch: list[Pending]) -> None:
        entry = self.runtime.entry
        try:
            if not batch:
                return
            rows = [row for pending in batch for row in pending.rows]
            if self.runtime.metrics is not None:
                self.runtime.metrics.batch_size.labels(entry.name, entry.version).observe(len(batch))
            try:
                result = await self.runtime.in_thread(entry.predictor.predict, rows)
                parts = split(result, [len(pending.rows) for pending in batch])
            except Exception as error:
                failure = ModelFailure(entry.name, entry.version, "predict", error)
                failure.__cause__ = error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(failure)
                return
            for pending, part in zip(batch, parts, strict=True):
                if not pending.future.done():
                    pending.future.set_result(part)
        finally:
            self.free.release()


def split(result: Any, sizes: list[int]) -> list[Any]:
    """A batch's result cut back into each request's rows; the model must give one item a row."""
    if not hasattr(result, "__len__") or not hasattr(result, "__getitem__") or isinstance(result, (str, dict)):
        raise TypeError(f"a batched model must return one item a row, got {type(result).__name__}")
    if len(result) != sum(sizes):
        raise ValueError(f"the batched model returned {len(result)} items for {sum(sizes)} rows")
    parts, start = [], 0
    for size in sizes:
        parts.append(result[start : start + size])
        start += size
    return parts
