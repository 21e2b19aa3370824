"""Inline calls: a short predict of a model that declares ``inline = True`` runs on the event loop.

For a small model the hop to a thread and back, and the two threads contending
for the GIL, cost more than the model itself. So for a predictor that declares
``inline = True`` (its predict is a short computation that never waits), a
predict call expected to take less than ``inline_budget`` (1 ms by default) runs
on the event loop instead of the model's thread.

The expectation is measured, not guessed: at startup the model is timed on its
fixture and on 1024 rows cycled from it (``calibrate``), giving a fixed and a
per-row cost, and every inline call is timed against it. A model that runs
slower than measured goes back to its threads (one call a second checks whether
it still is); three calls over ten budgets, or one over 100 ms, send it there
for good. Never while one of the model's threads is busy, so
``max_concurrency = 1`` still means one call at a time.

Measured: ``benchmarks/micro/inline_calls.py`` times one 1-row predict of the
example model inline and through its thread; delete this module when the two
come close.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stevedore_server.base import tracing
from stevedore_server.plugins.loading import LoadedModel

logger = logging.getLogger("stevedore.inline")

#: Inline calls over this many budgets are strikes; this many strikes move the model to its threads for good.
INLINE_LIMIT = 10
INLINE_STRIKES = 3
#: Seconds (asyncio's own slow-callback threshold): one inline call this long is all three strikes.
INLINE_STALL = 0.1
#: Recent inline calls whose median, against the measured cost, is the model's slowdown.
INLINE_WINDOW = 15
#: Seconds between the inline calls that check whether a model found slow still is.
INLINE_PROBE_INTERVAL = 1.0
#: Rows of the larger calibration payload; with the fixture's, the two points of the cost line.
CALIBRATION_ROWS = 1024
CALIBRATION_RUNS = 5
#: A "model" span's attributes where the call ran on the event loop.
INLINE_ATTRIBUTES = {"stevedore.inline": True}


@dataclass(frozen=True)
class CallCost:
    """A model's predict time in seconds, as measured at startup: ``fixed + per_row * rows``."""

    fixed: float
    per_row: float

    def of(self, rows: int) -> float:
        return self.fixed + self.per_row * rows


def calibrate(model: LoadedModel, budget: float) -> CallCost | None:
    """Time predict on the fixture and on ``CALIBRATION_ROWS`` rows cycled from it, as requests will call it.

    None (the model never runs inline) where its payload is not rows, a larger
    payload is not valid, predict fails, or the fixture alone takes longer than
    ``budget``. A slow call is timed once after a warm-up, not
    ``CALIBRATION_RUNS`` times: a slow model costs the startup two calls.
    """
    fixture, validator = model.predict_fixture, model.predict_validator
    if not model.ready or validator is None or not isinstance(fixture, list) or not fixture:
        return None
    large = [fixture[i % len(fixture)] for i in range(CALIBRATION_ROWS)]
    if not validator.is_valid(large):
        return None
    # Timed as the calls will run: a numpy_input model with an array schema gets arrays.
    check = model.array_check
    arrays = model.predictor.numpy_input and check is not None and check.leaf != "boolean"

    def once(payload: Any) -> float:
        if arrays:
            payload = np.asarray(payload, dtype=np.float64)
        started = time.perf_counter()
        model.predictor.predict(payload)
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
            logger.info("model %s version %s: predict takes longer than the inline budget", model.name, model.version)
            return None
        large_seconds = seconds(large, INLINE_LIMIT * budget)
    except Exception as error:
        logger.info("model %s: not calibrated, it runs on its threads only: %r", model.name, error)
        return None
    per_row = max(0.0, (large_seconds - small_seconds) / (len(large) - len(fixture)))
    cost = CallCost(max(0.0, small_seconds - per_row * len(fixture)), per_row)
    logger.info(
        "model %s version %s: predict measured at %.0f µs + %.2f µs a row",
        model.name, model.version, cost.fixed * 1e6, cost.per_row * 1e6,
    )  # fmt: skip
    return cost


class InlinePolicy:
    """Whether a predict of so many rows runs on the event loop, judged by the measured cost and recent calls."""

    def __init__(self, label: str, cost: CallCost, budget: float) -> None:
        self.label = label
        #: The measured cost line, or None once the model has been sent to its threads for good.
        self.cost: CallCost | None = cost
        self.budget = budget
        self.slowdown = 1.0
        self.ratios: collections.deque[float] = collections.deque(maxlen=INLINE_WINDOW)
        self.strikes = 0
        self.next_probe = 0.0

    def allows(self, rows: int) -> bool:
        if self.cost is None:
            return False
        expected = self.cost.of(rows)
        if expected * self.slowdown <= self.budget:
            return True
        # Slower lately than measured: now and then one call (that the measured cost allows) checks if it still is.
        if expected <= self.budget and time.monotonic() >= self.next_probe:
            self.next_probe = time.monotonic() + INLINE_PROBE_INTERVAL
            return True
        return False

    def call(self, method: Callable[[Any], Any], payload: Any, rows: int) -> Any:
        """``method(payload)`` right here on the event loop, timed against the model's cost."""
        started = time.perf_counter()
        try:
            if tracing.active():
                with tracing.span("model", INLINE_ATTRIBUTES):
                    return method(payload)
            return method(payload)
        finally:
            self.judge(rows, time.perf_counter() - started)

    def judge(self, rows: int, seconds: float) -> None:
        """Track inline calls against the measured cost: the median of the recent ones is the model's slowdown,
        which a noisy neighbour's odd pause does not move; a model that keeps taking far too long goes to its
        threads for good."""
        if self.cost is None:
            return
        if seconds > INLINE_LIMIT * self.budget:
            self.strikes += 1 if seconds < INLINE_STALL else INLINE_STRIKES
            logger.warning(
                "%s: a call of %d rows took %.1f ms on the event loop, over %d times the inline budget of %.1f ms "
                "(strike %d of %d)",
                self.label, rows, seconds * 1000, INLINE_LIMIT, self.budget * 1000,
                min(self.strikes, INLINE_STRIKES), INLINE_STRIKES,
            )  # fmt: skip
            if self.strikes >= INLINE_STRIKES:
                self.cost = None
                logger.warning("%s runs on its threads from now on", self.label)
                return
        self.ratios.append(seconds / max(self.cost.of(rows), 1e-6))
        self.slowdown = max(1.0, sorted(self.ratios)[len(self.ratios) // 2])
