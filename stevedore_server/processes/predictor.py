"""``ProcessPredictor``: a model served by worker processes (``isolation``), as the rest of the server sees it.

What its worker processes declared (schemas, fixtures, tensors, batching) are
its attributes; ``predict`` and ``score`` are calls to its pool (each on one of
the model's threads, waiting there for an idle process); ``predict_stream`` is
an async generator whose items are awaited on a thread of the stream's own, as
the stream holds its process from its first item to its end; ``stop_call``
kills the process of a call nobody waits for (``cancel = "kill"``); ``unload``
stops the pool. A job on it (a training, a long prediction) runs in a process
of the pool's interpreter (``start_job``); the new version a training made is
a ``ProcessPredictor`` whose ``load`` starts a pool of its own (``trained``).

Kept apart from ``isolation`` so that the catalogue, serving and the jobs can
know such a model without importing how its processes are run.
"""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from stevedore_server.base.errors import PluginError
from stevedore_server.predictor import Predictor

#: What a stream's step returns once the pool's generator is done.
DONE: Any = object()
#: Reports a pool's processes' memory: (model, version, process index, bytes or None once gone).
MemoryReport = Callable[[str, str, int, int | None], None]
#: What marks the call a model's thread makes now, set in that call's context by the caller (the core: the
#: request's bound): ``stop_call(token)`` stops the call made under ``token`` and none other, not the next call
#: the same thread (the model's threads are pooled) makes for another request. None: a call nobody stops (a
#: self-test, a batch serving several requests).
CALL: contextvars.ContextVar[object | None] = contextvars.ContextVar("stevedore_process_call", default=None)


class Pool(Protocol):
    """Worker processes of one model (``pool.ProcessPool``)."""

    report_memory: MemoryReport | None
    #: What its worker processes were told to load (model, version, plugins, a trained artifact).
    orders: dict[str, Any]

    def start(self) -> dict[str, Any]: ...

    def start_job(self) -> tuple[subprocess.Popen[bytes], Connection]: ...

    def call(self, action: str, payload: Any) -> Any: ...

    def stream(self, payload: Any) -> Generator[Any, None, None]: ...

    def stop_call(self, token: object, why: str) -> None: ...

    def close(self) -> None: ...


class ProcessPredictor(Predictor):
    """A model served by its worker processes: what they declared, and ``predict``/``score`` sent to them."""

    def __init__(self, pool: Pool | None, declared: dict[str, Any], placement: dict[str, Any]) -> None:
        super().__init__()
        for attribute, value in declared.items():
            setattr(self, attribute, value)
        self.declared = declared
        self.pool = pool
        #: Makes a pool (not started) for other orders: that of a trained version.
        self.make_pool: Callable[[dict[str, Any]], Pool] | None = None
        #: Where the model runs, for the catalogue.
        self.placement = placement
        #: The catalogue fields of the plugin's distribution, as installed where the model runs.
        self.distribution_metadata: dict[str, Any] | None = None
        #: The model implements ``predict_stream`` (where it runs).
        self.streams = False
        #: The model implements ``predict_outputs`` (where it runs).
        self.chooses_outputs = False
        #: The orders of the pool ``load`` starts (a trained version's).
        self.pending_orders: dict[str, Any] | None = None

    @classmethod
    def placeholder(cls, name: str, version: str) -> ProcessPredictor:
        """A model of another environment before it is loaded: a name and a version, nothing else."""
        return cls(None, {"name": name, "version": version}, {})

    def predict(self, payload: Any) -> Any:
        return self._pool().call("predict", payload)

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        outputs: dict[str, Any] = self._pool().call("predict_outputs", (payload, names))
        return outputs

    @property
    def has_predict_outputs(self) -> bool:
        return self.chooses_outputs

    def score(self, payload: Any) -> Any:
        return self._pool().call("score", payload)

    def stop_call(self, token: object, why: str) -> None:
        """Kill the worker process running the call made under ``token`` (``CALL``), as nobody waits for its
        result (``why``); nothing if that call has ended. The call fails, and the process is replaced."""
        if self.pool is not None:
            self.pool.stop_call(token, why)

    async def predict_stream(self, payload: Any) -> AsyncGenerator[Any, None]:
        """The model's items, from a worker process, each awaited on a thread of this stream's own.

        Not on the model's threads: between its items the stream holds its process, and calls waiting for a
        process may hold every one of those threads; the stream's next item would then wait for them while they
        wait for its process (until the time-out). On its own thread a stream needs nothing but its process."""
        items = self._pool().stream(payload)
        steps = ThreadPoolExecutor(1, thread_name_prefix=f"stream-{self.name}")
        context = contextvars.copy_context()  # the request's id, which the pool sends with the stream
        loop = asyncio.get_running_loop()

        def step() -> Any:
            return next(items, DONE)

        try:
            while (item := await loop.run_in_executor(steps, context.run, step)) is not DONE:
                yield item
        finally:
            # Not awaited: a step the time-out abandoned may still be waiting for its item, and the close (which
            # has the worker close the model's generator and frees the process) must come after it.
            steps.submit(context.run, items.close)
            steps.shutdown(wait=False)

    @property
    def has_stream(self) -> bool:
        return self.streams

    def trained(self, artifact: Path, version: str) -> ProcessPredictor:
        """The new version a training made, served by worker processes of its own once loaded (``load``):
        they load the installed version this one comes from with ``artifact``."""
        orders = self._pool().orders
        base_version = orders.get("base_version", orders["version"])
        clone = ProcessPredictor(None, {**self.declared, "version": version}, self.placement)
        clone.distribution_metadata = self.distribution_metadata
        clone.make_pool = self.make_pool
        clone.pending_orders = {**orders, "version": version, "base_version": base_version, "artifact": str(artifact)}
        return clone

    def load(self) -> None:
        """Start the worker processes of a trained version (the others' are started before their load)."""
        if self.pool is not None or self.make_pool is None or self.pending_orders is None:
            return
        pool = self.make_pool(self.pending_orders)
        description = pool.start()
        self.created, self.streams, self.pool = description["created"], description["streams"], pool

    def start_job(self) -> tuple[subprocess.Popen[bytes], Connection]:
        """A job process under the interpreter of the model's worker processes, and the socket to it."""
        return self._pool().start_job()

    def _pool(self) -> Pool:
        if self.pool is None:
            raise PluginError(f"model {self.name!r} version {self.version!r} has no worker processes")
        return self.pool

    def unload(self) -> None:
        if self.pool is not None:
            self.pool.close()


def report_memory(predictor: Predictor, report: MemoryReport) -> None:
    """Have the worker processes of a model served by them report their memory (any other model has none)."""
    if isinstance(predictor, ProcessPredictor) and predictor.pool is not None:
        predictor.pool.report_memory = report
