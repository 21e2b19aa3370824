"""Running inferences: per-model threads, a bounded queue, time-outs, adaptive batching, and inline calls.

Each model gets its own worker threads (``max_concurrency``), so a slow model
never holds another's. Requests beyond the threads wait, up to ``max_queue``;
beyond that they are refused at once (503 with Retry-After) instead of piling
up in memory. An inference that outlives ``timeout`` answers 504; its thread is
abandoned to finish on its own, and the server stays responsive.

For a predictor that declares ``inline = True`` (its predict is a short
computation that never waits), a predict call expected to take less than
``inline_budget`` (1 ms by default) runs on the event loop instead: for a small
model the hop to a thread and back, and the two threads contending for the
GIL, cost more than the model itself.

The expectation is measured, not guessed: at startup each such row-aligned
model is timed on its fixture and on 1024 rows cycled from it (``calibrate``),
giving a fixed and a per-row cost, and every inline call is timed against it.
A model that runs slower than measured goes back to its threads (one call a
second checks whether it still is); three calls over ten budgets, or one over
100 ms, send it there for good. Only predict runs inline, and never while one
of the model's threads is busy, so ``max_concurrency = 1`` still means one call
at a time.

With ``max_batch_size`` above 1, predict requests queued while the model is
busy are merged into one model call (rows concatenated) and the result split
back, each caller getting exactly its own rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ClientError, ModelFailure, StevedoreError
from .metrics import Metrics
from .predictor import Predictor
from .registry import ModelEntry, require_validator
from .settings import Settings

logger = logging.getLogger("stevedore.runtime")

RETRY_AFTER_SECONDS = 1
#: Inline calls over this many budgets are strikes; this many strikes move the model to its threads for good.
INLINE_LIMIT = 10
INLINE_STRIKES = 3
#: Seconds (asyncio's own slow-callback threshold): one inline call this long is all three strikes.
INLINE_STALL = 0.1
#: Recent inline calls whose median, against the measured cost, is the model's slowdown.
INLINE_WINDOW = 15
#: Seconds between the inline calls that check whether a model found slow still is.
INLINE_PROBE_INTERVAL = 1.0


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
    inline_budget: float

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
            inline_budget=pick(own.inline_budget, settings.inline_budget if predictor.inline is True else 0.0),
        )


@dataclass(frozen=True)
class CallCost:
    """A row-aligned model's predict time in seconds, as measured at startup: ``fixed + per_row * rows``."""

    fixed: float
    per_row: float

    def of(self, rows: int) -> float:
        return self.fixed + self.per_row * rows


#: Rows of the larger calibration payload; with the fixture's, the two points of the cost line.
CALIBRATION_ROWS = 1024
CALIBRATION_RUNS = 5


def calibrate(entry: ModelEntry, budget: float) -> CallCost | None:
    """Time predict on the fixture and on ``CALIBRATION_ROWS`` rows cycled from it, as requests will call it.

    None (the model never runs inline) where its payload is not rows, a larger
    payload is not valid, predict fails, or the fixture alone takes longer than
    ``budget``. A slow call is timed once after a warm-up, not
    ``CALIBRATION_RUNS`` times: a slow model costs the startup two calls.
    """
    fixture = entry.predict_fixture
    validator = entry.predict_validator
    if not entry.ready or validator is None or not entry.predictor.row_aligned:
        return None
    if not isinstance(fixture, list) or not fixture:
        return None
    large = [fixture[i % len(fixture)] for i in range(CALIBRATION_ROWS)]
    if not validator.is_valid(large):
        return None
    # Timed as the calls will run: a numpy_input model with an array schema gets arrays, checked before the call.
    arrays = entry.predictor.numpy_input and entry.array_check is not None and entry.array_check.leaf != "boolean"
    call = entry.predict_valid if arrays else entry.predict

    def once(payload: Any) -> float:
        if arrays:
            payload = np.asarray(payload, dtype=np.float64)
        started = time.perf_counter()
        call(payload)
        return time.perf_counter() - started

    def seconds(payload: list[Any], enough: float) -> float:
        once(payload)  # a first call may be slower: caches, lazy imports
        first = once(payload)
        if first > enough:
            return first
        return sorted([first, *(once(payload) for _ in range(CALIBRATION_RUNS - 1))])[CALIBRATION_RUNS // 2]

    try:
        small_seconds = seconds(fixture, budget)
        if small_seconds > budget:
            logger.info("model %s version %s: predict takes longer than the inline budget", entry.name, entry.version)
            return None
        large_seconds = seconds(large, INLINE_LIMIT * budget)
    except Exception as error:
        logger.info("model %s: not calibrated, it runs on its threads only: %r", entry.name, error)
        return None
    per_row = max(0.0, (large_seconds - small_seconds) / (len(large) - len(fixture)))
    cost = CallCost(max(0.0, small_seconds - per_row * len(fixture)), per_row)
    logger.info(
        "model %s version %s: predict measured at %.0f µs + %.2f µs a row",
        entry.name, entry.version, cost.fixed * 1e6, cost.per_row * 1e6,
    )  # fmt: skip
    return cost


class ModelRuntime:
    """How one model's inferences run; created in the app's lifespan, inside the event loop."""

    def __init__(
        self, entry: ModelEntry, limits: ModelLimits, metrics: Metrics | None = None, cost: CallCost | None = None
    ) -> None:
        self.entry = entry
        self.limits = limits
        self.metrics = metrics
        # A plain executor: its hop costs about 40 µs here against AnyIO's 60, which matters for fast models.
        self.threads = ThreadPoolExecutor(limits.max_concurrency, thread_name_prefix=f"model-{entry.name}")
        self.admitted = 0
        # Calls handed to the threads, and those ended; only the event loop writes the first.
        self.submitted = 0
        self.finished = 0
        self.finished_lock = threading.Lock()
        #: The measured cost line, or None: never inline. ``slowdown`` tracks inline calls against it.
        self.cost = cost if limits.inline_budget > 0 else None
        self.slowdown = 1.0
        self.ratios: collections.deque[float] = collections.deque(maxlen=INLINE_WINDOW)
        self.strikes = 0
        self.next_probe = 0.0
        self.samples: dict[str, tuple[Any, Any]] = {}
        self.batcher = Batcher(self) if limits.max_batch_size > 1 and batchable(entry) else None

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running (a batch holds several) plus waiting."""
        return self.limits.max_concurrency * self.limits.max_batch_size + self.limits.max_queue

    async def run(self, action: str, method: Callable[[Any], Any], payload: Any, rows: int | None = None) -> Any:
        """``method(payload)`` on this model's threads, within its queue bound and time-out; a predict of
        ``rows`` rows expected within the inline budget runs on the event loop instead."""
        if rows is not None and self.runs_inline(rows):
            return self._inline(action, method, payload, rows)
        return await self._admitted(action, self._in_thread(action, method, payload))

    async def predict(self, payload: Any, valid: bool = False) -> Any:
        """Validate (unless ``valid`` already), then predict: merged with other requests where the model batches."""
        rows = len(payload) if isinstance(payload, (list, np.ndarray)) else None
        if self.batcher is None:
            return await self.run("predict", self.entry.predict_valid if valid else self.entry.predict, payload, rows)
        if not valid:
            require_validator(self.entry.predict_validator).validate(payload)  # a bad request never joins a batch
        return await self._admitted("predict", self.batcher.submit(payload))

    def runs_inline(self, rows: int) -> bool:
        if self.cost is None or self.submitted != self.finished:
            return False
        expected = self.cost.of(rows)
        if expected * self.slowdown <= self.limits.inline_budget:
            return True
        # Slower lately than measured: now and then one call (that the measured cost allows) checks if it still is.
        if expected <= self.limits.inline_budget and time.monotonic() >= self.next_probe:
            self.next_probe = time.monotonic() + INLINE_PROBE_INTERVAL
            return True
        return False

    def _inline(self, action: str, method: Callable[[Any], Any], payload: Any, rows: int) -> Any:
        started = time.perf_counter()
        try:
            result = self.call_inline(method, payload, rows)
        except ClientError:
            raise
        except ModelFailure:
            self.count_error(action, "error")
            raise
        except Exception as error:
            self.count_error(action, "error")
            raise ModelFailure(self.entry.name, self.entry.version, action, error) from error
        self.observe(action, started)
        return result

    def call_inline(self, method: Callable[[Any], Any], payload: Any, rows: int) -> Any:
        """``method(payload)`` right here on the event loop, timed against the model's cost."""
        started = time.perf_counter()
        try:
            return method(payload)
        finally:
            self.judge_inline(rows, time.perf_counter() - started)

    def judge_inline(self, rows: int, seconds: float) -> None:
        """Track inline calls against the measured cost: the median of the recent ones is the model's slowdown,
        which a noisy neighbour's odd pause does not move; a model that keeps taking far too long goes to its
        threads for good."""
        if self.cost is None:
            return
        budget = self.limits.inline_budget
        if seconds > INLINE_LIMIT * budget:
            self.strikes += 1 if seconds < INLINE_STALL else INLINE_STRIKES
            logger.warning(
                "model %s version %s: a call of %d rows took %.1f ms on the event loop, over %d times the inline "
                "budget of %.1f ms (strike %d of %d)",
                self.entry.name, self.entry.version, rows, seconds * 1000, INLINE_LIMIT, budget * 1000,
                min(self.strikes, INLINE_STRIKES), INLINE_STRIKES,
            )  # fmt: skip
            if self.strikes >= INLINE_STRIKES:
                self.cost = None
                logger.warning(
                    "model %s version %s runs on its threads from now on", self.entry.name, self.entry.version
                )
                return
        self.ratios.append(seconds / max(self.cost.of(rows), 1e-6))
        self.slowdown = max(1.0, sorted(self.ratios)[len(self.ratios) // 2])

    async def _admitted(self, action: str, work: Coroutine[Any, Any, Any]) -> Any:
        if self.admitted >= self.capacity:
            work.close()
            self.count_error(action, "overloaded")
            raise Overloaded(
                f"model {self.entry.name!r} has {self.admitted} inferences running or waiting; try again shortly"
            )
        self.admitted += 1
        started = time.perf_counter()
        # asyncio's own time-out: AnyIO's cancel scope costs about 10 µs more, on every request.
        deadline = asyncio.timeout(self.limits.timeout)
        try:
            async with deadline:
                result = await work
            self.observe(action, started)
            return result
        except ModelFailure:
            self.count_error(action, "error")
            raise
        except TimeoutError:
            if not deadline.expired():
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
        self.submitted += 1
        return asyncio.get_running_loop().run_in_executor(self.threads, self._call, context, method, payload)

    def _call(self, context: contextvars.Context, method: Callable[[Any], Any], payload: Any) -> Any:
        try:
            return context.run(method, payload)
        finally:  # counted when the call ends, even one a time-out abandoned
            with self.finished_lock:
                self.finished += 1

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

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.waiting: collections.deque[Pending] = collections.deque()
        self.arrived = asyncio.Event()  # set while requests wait
        self.full = asyncio.Event()  # set while a full batch waits
        self.free = asyncio.Semaphore(runtime.limits.max_concurrency)
        self.task: asyncio.Task[None] | None = None
        self.running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def submit(self, rows: list[Any] | np.ndarray[Any, Any]) -> Any:
        if self.task is None:
            self.task = asyncio.create_task(self._collect())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(Pending(rows, future, loop.time()))
        self.arrived.set()
        if len(self.waiting) >= self.runtime.limits.max_batch_size:
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
        limits = self.runtime.limits
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
        entry = self.runtime.entry
        try:
            if not batch:
                return
            rows = merge([pending.rows for pending in batch])
            if self.runtime.metrics is not None:
                self.runtime.metrics.batch_size.labels(entry.name, entry.version).observe(len(batch))
            try:
                if self.runtime.runs_inline(len(rows)):
                    result = self.runtime.call_inline(entry.predictor.predict, rows, len(rows))
                else:
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


def merge(parts: list[Any]) -> Any:
    """The rows of several requests as one payload: one array if all are arrays, else one list."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts)
    return [row for part in parts for row in (part.tolist() if isinstance(part, np.ndarray) else part)]


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
