"""Per-model inference statistics, as Triton's statistics extension reports them, measured where each stage is.

One ``ModelStatistics`` a model's runtime counts, for the life of that runtime:

- ``inference_count``: inferences that succeeded (a batched model counts a
  request's rows, as Triton counts a request's batch; any other model one a
  request), and ``execution_count``: the model's calls that answered (a batch
  is one);
- ``success`` and ``fail``: requests and their whole time in the server (from
  the front end's handler to its encoded answer);
- for successful requests, where that time went: ``queue`` (admitted until the
  model's call started: waiting for a thread, or for the batch), ``compute_input``
  (the front end's decoding of tensors and the core's validation),
  ``compute_infer`` (the model's call) and ``compute_output`` (encoding the
  answer);
- each execution by its batch size (rows), with its input, infer and output times.

A request is timed by a ``Timing`` that lives in a context variable while it is
served (``RequestTimer``): the front end opens it, the inference core names the
model it belongs to (``attach``), and each stage adds its nanoseconds to it.
A front end that opens none gets one from ``Inference.call``, covering
validation and the model's call. The model's call is timed on its worker thread
by ``Timing.run`` (a request's context reaches the thread) or by the batcher
for a batch; a runtime that timed nothing itself (a Ray Serve deployment) gets
the whole call as its compute time. Everything is counted on the event loop,
and read there: plain integers, no lock, and a read sees whole requests.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any


class Timing:
    """One request's nanoseconds by stage, the model it belongs to (None: not known yet), and its rows."""

    __slots__ = ("executed", "infer", "input", "output", "queue", "queued", "ran", "rows", "started", "statistics")

    def __init__(self) -> None:
        self.started = time.perf_counter_ns()
        self.statistics: ModelStatistics | None = None
        self.rows: int | None = None
        self.input = self.queue = self.infer = self.output = 0
        #: When it was handed to the model's threads or its batcher (the start of its queue time).
        self.queued = 0
        #: A runtime timed its model call (else the inference core times the whole runtime call).
        self.executed = False
        #: The model call on a thread: its start and end (``run``).
        self.ran: tuple[int, int] | None = None

    def run(self, method: Callable[[Any], Any], payload: Any) -> Any:
        """``method(payload)`` timed: called on the model's thread."""
        started = time.perf_counter_ns()
        try:
            return method(payload)
        finally:
            self.ran = (started, time.perf_counter_ns())


CURRENT: contextvars.ContextVar[Timing | None] = contextvars.ContextVar("stevedore_timing", default=None)


def current() -> Timing | None:
    """The timing of the request being served, if one is open."""
    return CURRENT.get()


def attach(statistics: ModelStatistics) -> None:
    """The request being served is the model's (its outcome counts in ``statistics``)."""
    timing = CURRENT.get()
    if timing is not None:
        timing.statistics = statistics


def input_since(started: int) -> None:
    """Add the time since ``started`` (``time.perf_counter_ns``) to the request's compute input."""
    timing = CURRENT.get()
    if timing is not None:
        timing.input += time.perf_counter_ns() - started


def validated(started: int, rows: int | None) -> None:
    """The request's payload was validated since ``started``: compute input, and its rows."""
    timing = CURRENT.get()
    if timing is not None:
        timing.input += time.perf_counter_ns() - started
        timing.rows = rows


def called(started: int, statistics: ModelStatistics) -> None:
    """The runtime answered the call made at ``started``; where it timed nothing itself (a Ray Serve
    deployment's runtime), the whole call is the request's compute and one execution."""
    timing = CURRENT.get()
    if timing is not None and not timing.executed:
        took = time.perf_counter_ns() - started
        timing.infer += took
        statistics.executed(1, 0, took, 0)


def output_since(started: int) -> None:
    """Add the time since ``started`` (``time.perf_counter_ns``) to the request's compute output."""
    timing = CURRENT.get()
    if timing is not None:
        timing.output += time.perf_counter_ns() - started


class RequestTimer:
    """One request timed: its outcome and stages counted in its model's statistics when the block ends (a
    failure if it raised; a cancelled request counts as neither)."""

    __slots__ = ("timing", "token")

    def __enter__(self) -> Timing:
        self.timing = Timing()
        self.token = CURRENT.set(self.timing)
        return self.timing

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        CURRENT.reset(self.token)
        statistics = self.timing.statistics
        if statistics is None:
            return
        if error is None:
            statistics.succeeded(self.timing)
        elif isinstance(error, Exception):
            statistics.failed(self.timing)


@dataclass(frozen=True)
class Snapshot:
    """A copy of one model's statistics, in Triton's JSON form (``ModelStatistics``, without its name and
    version)."""

    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: dict[str, dict[str, int]]
    batch_stats: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": self.inference_stats,
            "batch_stats": self.batch_stats,
        }


def duration(count: int, ns: int) -> dict[str, int]:
    """Triton's ``StatisticDuration``: a count and its cumulative nanoseconds."""
    return {"count": count, "ns": ns}


class ModelStatistics:
    """One model's counts and durations; ``rows_are_inferences`` for a batched model (see the module).

    Plain integers, added to on the event loop and read there (no lock: nothing else writes them, and a read
    between two requests' additions sees whole requests): a request costs a few additions.
    """

    def __init__(self, rows_are_inferences: bool = False) -> None:
        self.rows_are_inferences = rows_are_inferences
        #: Milliseconds since the epoch of the last request's end; 0 before any.
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        # The successful requests: their count (that of every stage too) and each stage's nanoseconds.
        self.successes = self.success_ns = self.queue_ns = self.input_ns = self.infer_ns = self.output_ns = 0
        self.failures = self.fail_ns = 0
        #: Each batch size's executions: [count, input ns, infer ns, output ns].
        self.batches: dict[int, list[int]] = {}

    def succeeded(self, timing: Timing) -> None:
        ended = time.perf_counter_ns()
        self.last_inference = time.time_ns() // 1_000_000
        rows = timing.rows
        self.inference_count += rows if self.rows_are_inferences and rows is not None else 1
        self.successes += 1
        self.success_ns += ended - timing.started
        self.queue_ns += timing.queue
        self.input_ns += timing.input
        self.infer_ns += timing.infer
        self.output_ns += timing.output

    def failed(self, timing: Timing) -> None:
        ended = time.perf_counter_ns()
        self.last_inference = time.time_ns() // 1_000_000
        self.failures += 1
        self.fail_ns += ended - timing.started

    def executed(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One call of the model on ``batch_size`` rows (1 where its payload is not rows)."""
        self.execution_count += 1
        batch = self.batches.get(batch_size)
        if batch is None:
            self.batches[batch_size] = [1, input_ns, infer_ns, output_ns]
        else:
            batch[0] += 1
            batch[1] += input_ns
            batch[2] += infer_ns
            batch[3] += output_ns

    def snapshot(self) -> Snapshot:
        successes = self.successes
        stages = {
            "success": duration(successes, self.success_ns),
            "fail": duration(self.failures, self.fail_ns),
            "queue": duration(successes, self.queue_ns),
            "compute_input": duration(successes, self.input_ns),
            "compute_infer": duration(successes, self.infer_ns),
            "compute_output": duration(successes, self.output_ns),
        }
        batches = [
            {
                "batch_size": size,
                "compute_input": duration(count, input_ns),
                "compute_infer": duration(count, infer_ns),
                "compute_output": duration(count, output_ns),
            }
            for size, (count, input_ns, infer_ns, output_ns) in sorted(self.batches.items())
        ]
        return Snapshot(self.last_inference, self.inference_count, self.execution_count, stages, batches)


def timed_thread_call(timing: Timing | None, statistics: ModelStatistics, rows: int | None) -> None:
    """Count a model call that answered, timed on a thread by ``Timing.run``: its queue (from ``timing.queued``),
    its compute, and the execution."""
    if timing is None or timing.ran is None:
        return
    started, ended = timing.ran
    timing.queue += started - timing.queued
    timing.infer += ended - started
    timing.executed = True
    statistics.executed(rows_or_one(rows, statistics), 0, ended - started, 0)


def rows_or_one(rows: int | None, statistics: ModelStatistics) -> int:
    """A call's batch size: its rows for a batched model, else 1 (Triton's batch size of an unbatched model)."""
    return rows if statistics.rows_are_inferences and rows is not None else 1
