"""A request's deadline, and what became of it: work that nobody waits for any more is dropped.

A front end sets a ``Bound`` for the inference it runs (``bounded``): its
deadline, if the request has one (a gRPC deadline, ``X-Request-Timeout``, the
V2 ``timeout`` parameter: the front end says which, for the 504's message),
and, once its client has left (an HTTP disconnect, a cancelled RPC), why its
task was cancelled. The core reads it (``current``):

- ``Admission.run`` waits and calls within the sooner of the deadline and the
  model's time-out; a deadline already passed refuses the call before it
  waits;
- a request cancelled while it waits (for one of the model's threads, in a
  batch's queue) is removed there: its model never runs it (``ModelThreads``
  cancels its queued call; a batch takes only the rows of callers still
  waiting), and ``stevedore_requests_dropped_total`` counts it;
- a model's thread marks the call it begins (``begin``): a request cancelled
  after that is not counted as dropped, its call runs to its end on the
  thread (threads cannot be interrupted) and its result is thrown away; for a
  model in worker processes with ``cancel = "kill"`` the process running it is
  killed and replaced (``ProcessPredictor.stop_call``, the bound being the
  token its call was made under: never the call of another request that the
  same thread runs by then).

A context variable, as the request's timing (``statistics``) is: the bound
follows the request through the core's awaits, and onto the model's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stevedore_server.base.errors import BadRequest

#: The Open Inference Protocol's request parameter bounding a request, in microseconds (as Triton's, which
#: ``tritonclient``'s ``infer(..., timeout=)`` sends), on both transports.
TIMEOUT_PARAMETER = "the timeout parameter"
MICROSECONDS = 1e-6


class Dropped(enum.StrEnum):
    """Why a request was given up (the ``reason`` label of ``stevedore_requests_dropped_total``)."""

    DISCONNECTED = "disconnected"
    DEADLINE = "deadline"


@dataclass(eq=False, slots=True)
class Bound:
    """One request's deadline, and whether its model call has begun."""

    #: ``time.monotonic()`` by which the request must be answered; None: only the model's time-out bounds it.
    deadline: float | None = None
    #: What set the deadline, for the 504's message ("X-Request-Timeout", "the gRPC deadline", ...).
    source: str = ""
    #: A model's thread began the request's call (or the batch holding its rows began).
    started: bool = False
    #: Why its front end cancelled it, set before it cancels (None: it was cancelled from outside, see ``cause``).
    reason: Dropped | None = None
    #: Why the request was cancelled by someone else than its front end (gRPC cancels a call itself, for a
    #: client gone or its deadline passed); None: the client left.
    cause: Callable[[], Dropped] | None = None

    def remaining(self) -> float | None:
        """Seconds left until the deadline (0 or less: passed), or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def tightened(self, seconds: float, source: str) -> None:
        """Bound the request to ``seconds`` from now too (``source`` says what asked), if that is sooner."""
        deadline = time.monotonic() + seconds
        if self.deadline is None or deadline < self.deadline:
            self.deadline, self.source = deadline, source

    def begin(self) -> None:
        """The request's call begins (called on the model's thread)."""
        self.started = True

    def why_cancelled(self) -> Dropped:
        """Why the request's task was cancelled."""
        if self.reason is not None:
            return self.reason
        return self.cause() if self.cause is not None else Dropped.DISCONNECTED


#: The bound of the request being served (None: a call without one, such as a self-test or a job).
BOUND: contextvars.ContextVar[Bound | None] = contextvars.ContextVar("stevedore_request_bound", default=None)


def current() -> Bound | None:
    return BOUND.get()


@contextlib.contextmanager
def bounded(bound: Bound) -> Iterator[Bound]:
    """``bound`` is the request's for the ``with`` block."""
    token = BOUND.set(bound)
    try:
        yield bound
    finally:
        BOUND.reset(token)


def within(seconds: float | None, source: str) -> Bound:
    """A bound of ``seconds`` from now (None: no deadline), set by ``source``."""
    bound = Bound()
    if seconds is not None:
        bound.tightened(seconds, source)
    return bound


def seconds_of(value: object, source: str, unit: float = 1.0) -> float:
    """A client's time-out (``value`` in units of ``unit`` seconds: 1e-6 for microseconds) as seconds: BadRequest
    unless it is a positive, finite number."""
    number: float | None = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        shown = repr(value)[:40]
        raise BadRequest(f"{source} must be a positive number of {'microseconds' if unit < 1 else 'seconds'}, "
                         f"not {shown}")  # fmt: skip
    return number * unit
