"""One model's worker threads, and the bound and time-out of the inferences admitted to run on them.

Each model gets its own threads (``max_concurrency``), so a slow model never
holds another's. Requests beyond the threads wait, up to ``max_queue``; beyond
that they are refused at once (503 with Retry-After) instead of piling up in
memory, and a front end asks first (``check``), before it reads the request's
body. An inference that outlives ``timeout``, or its request's deadline
(``deadlines``), answers 504; its thread is abandoned to finish on its own, and
the server stays responsive. A request cancelled while it waits for a thread
(its client left) is taken out of the queue: the model never runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from stevedore_server.base import tracing
from stevedore_server.base.errors import InferenceTimeout, ModelFailure, Overloaded
from stevedore_server.base.metrics import ModelMetrics
from stevedore_server.base.settings import ModelLimits
from stevedore_server.processes.predictor import CALL

from .deadlines import BOUND, Bound, Dropped, current

logger = logging.getLogger("stevedore.admission")


@runtime_checkable
class StopsCalls(Protocol):
    """A predictor that can stop a call it runs (a model in worker processes): that made under ``token`` (the
    ``CALL`` its thread set), and none other."""

    def stop_call(self, token: object, why: str) -> None: ...


class ModelThreads:
    """A model's worker threads; counts the calls handed over and those ended (``busy``)."""

    def __init__(self, name: str, count: int) -> None:
        # A plain executor: its hop costs about 40 µs here against AnyIO's 60, which matters for fast models.
        self.executor = ThreadPoolExecutor(count, thread_name_prefix=f"model-{name}")
        # Only the event loop writes ``submitted``; the threads write ``finished``, under the lock.
        self.submitted = 0
        self.finished = 0
        self.finished_lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self.submitted != self.finished

    def call(self, method: Callable[[Any], Any], payload: Any, traced: bool = True) -> asyncio.Future[Any]:
        """``method(payload)`` on a thread, with the request's context (its id for the log, its trace).

        While tracing (and ``traced``: a stream's steps are events of its span instead), the call's wait for a
        thread is an "admission" span and the call a "model" span. Cancelling the future (a time-out, a client
        gone) abandons the thread to finish on its own or, while the call still waits for a thread, takes it out of
        the queue: it never runs.
        """
        context = contextvars.copy_context()
        if traced and tracing.active():
            method = functools.partial(traced_call, method, time.time_ns())
        self.submitted += 1
        call = self.executor.submit(self._run, context, method, payload)
        call.add_done_callback(self._dequeued)
        return asyncio.wrap_future(call)

    def _run(self, context: contextvars.Context, method: Callable[[Any], Any], payload: Any) -> Any:
        bound = context.get(BOUND)
        if bound is not None:  # from here on, its request's call runs whatever becomes of the request
            bound.begin()
            # The bound marks this call, for ``cancel = "kill"``: the thread will run other requests' calls.
            context.run(CALL.set, bound)
        try:
            return context.run(method, payload)
        finally:  # counted when the call ends, even one a time-out abandoned
            self._finished()

    def _dequeued(self, call: Future[Any]) -> None:
        """A call cancelled before a thread took it never runs ``_run``: it has ended all the same."""
        if call.cancelled():
            self._finished()

    def _finished(self) -> None:
        with self.finished_lock:
            self.finished += 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def traced_call(method: Callable[[Any], Any], queued_ns: int, payload: Any) -> Any:
    """``method(payload)`` on a model's thread, in spans: its wait for the thread since ``queued_ns``, its run."""
    tracing.record("admission", queued_ns)
    with tracing.span("model"):
        return method(payload)


class Reservation:
    """One inference's place in its model's bound (``Admission.reserve``), given back once, by whichever of its
    holders lets go first: the stream when it ends, or its response when it is over or cancelled. ``bound``: the
    request's (``deadlines``), as it was when the place was taken (a stream's items run after its handler)."""

    def __init__(self, admission: Admission, bound: Bound | None = None) -> None:
        self.admission = admission
        self.held = True
        self.bound = bound

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.admitted -= 1


class Admission:
    """At most ``limits.capacity`` inferences of one model running or waiting, each within ``limits.timeout``."""

    def __init__(self, label: str, limits: ModelLimits, metrics: ModelMetrics) -> None:
        self.label = label
        self.limits = limits
        self.metrics = metrics
        self.admitted = 0
        #: Stops a running call nobody waits for any more (``cancel = "kill"``); None: it runs to its end.
        self.stopper: StopsCalls | None = None

    def check(self, action: str) -> None:
        """Overloaded (counted) when the bound is reached; no place taken. A front end asks before it reads a
        request's body (``Inference.admit``), so that a full model refuses without paying for the body; the place
        itself is taken later, by ``run``, so that a body still on its way holds none."""
        if self.admitted >= self.limits.capacity:
            raise self.refusal(action)

    def refusal(self, action: str) -> Overloaded:
        """The refusal of one more ``action`` than the bound takes, counted."""
        self.metrics.count_error(action, "overloaded")
        return Overloaded(f"{self.label} has {self.admitted} inferences running or waiting; try again shortly")

    def reserve(self, action: str) -> Reservation:
        """A place in the bound, taken now (no await between the check and the count, so two requests cannot
        both take the last place); Overloaded when the bound is reached. For a stream: refused before its
        answer starts, counted until it ends."""
        self.check(action)
        self.admitted += 1
        return Reservation(self, current())

    @contextlib.asynccontextmanager
    async def streaming(self, action: str, reservation: Reservation) -> AsyncIterator[None]:
        """A whole stream as one inference, in the place ``reservation`` holds, within the time-out from its
        start (or its request's deadline, if sooner); the place is given back when the stream ends."""
        started = time.perf_counter()
        bound = reservation.bound
        remaining = None if bound is None else bound.remaining()
        timeout = self.limits.timeout if remaining is None else max(0.0, min(self.limits.timeout, remaining))
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                yield
            self.metrics.observe(action, started)
        except TimeoutError:
            if not deadline.expired():
                raise
            self.metrics.count_error(action, "timeout")
            if bound is not None and timeout < self.limits.timeout:
                raise InferenceTimeout(f"{self.label}: the request's deadline ({bound.source}) passed while it "
                                       "streamed") from None  # fmt: skip
            raise InferenceTimeout(f"{self.label} did not {action} within {self.limits.timeout:g} s") from None
        except ModelFailure:
            self.metrics.count_error(action, "error")
            raise
        finally:
            reservation.release()

    async def run(self, action: str, work: Coroutine[Any, Any, Any]) -> Any:
        """``work``'s result, or Overloaded (the bound is reached), InferenceTimeout (the model's time-out or the
        request's deadline passed) or the model's failure; within the request's bound (``deadlines``)."""
        if self.admitted >= self.limits.capacity:
            work.close()
            raise self.refusal(action)
        bound = current()
        timeout = self.limits.timeout
        remaining = None if bound is None else bound.remaining()
        if remaining is not None and bound is not None:
            if remaining <= 0:
                work.close()
                raise self.expired(action, bound)
            timeout = min(timeout, remaining)
        self.admitted += 1
        started = time.perf_counter()
        # asyncio's own time-out: AnyIO's cancel scope costs about 10 µs more, on every request.
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await work
            self.metrics.observe(action, started)
            return result
        except ModelFailure:
            self.metrics.count_error(action, "error")
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
        except asyncio.CancelledError:
            if bound is not None:
                self.given_up(action, bound, bound.why_cancelled())
            raise
        finally:
            self.admitted -= 1
        # Reached only when the time-out cancelled the work.
        if bound is not None and timeout < self.limits.timeout:  # the request's deadline came first
            raise self.expired(action, bound)
        self.metrics.count_error(action, "timeout")
        logger.warning("%s: %s timed out", self.label, action)
        if bound is not None:
            self.stop(bound, Dropped.DEADLINE)
        raise InferenceTimeout(f"{self.label} did not {action} within {self.limits.timeout:g} s")

    def given_up(self, action: str, bound: Bound, reason: Dropped) -> None:
        """A request given up (its client left, its deadline passed): counted as dropped if its model never began
        its call; else its call runs on to its end, its result thrown away (or is stopped: ``stopper``)."""
        if not bound.started:
            self.metrics.count_dropped(reason)
            logger.debug("%s: a %s dropped before it ran (%s)", self.label, action, reason)
            return
        if reason is Dropped.DEADLINE:
            self.metrics.count_error(action, "timeout")
        self.stop(bound, reason)

    def stop(self, bound: Bound, reason: Dropped) -> None:
        """Stop the running call of a request given up (``stopper``); a batch's call serves other callers too,
        and runs on (its calls are made under no bound)."""
        if bound.started and self.stopper is not None:
            why = "its client left" if reason is Dropped.DISCONNECTED else "its deadline passed"
            self.stopper.stop_call(bound, why)

    def expired(self, action: str, bound: Bound) -> InferenceTimeout:
        """The 504 of a request whose deadline passed, given up (``given_up``)."""
        self.given_up(action, bound, Dropped.DEADLINE)
        when = "while its model ran it" if bound.started else "before its model ran it"
        return InferenceTimeout(f"{self.label}: the request's deadline ({bound.source}) passed {when}")
