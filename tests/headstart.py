"""A head start for the slow setups of the heavy tiers: built on a thread of their own from the start of the
session, while the first tests run on the other core.

    head_start.submit("wheelhouse", lambda: build(root))  # at the start of the session (conftest's head_start)
    wheelhouse = head_start.result("wheelhouse")          # in the fixture that needs it: waits, or raises

pytest runs one test at a time, so one of the machine's two cores idles through most of the unit tests. The
wheelhouse, the container tier's image and the Ray tier's environment are built there instead, one after the
other (heavy runs one at a time), each only when its tier is among the session's tests. A setup that fails
raises its error in the fixture that asks for it, as if the fixture had run it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class HeadStart:
    """Setups started ahead, by name, on one thread."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head-start")
        self.started: dict[str, Future[Any]] = {}
        self.cleanups: dict[str, Callable[[Any], None]] = {}
        self.taken: set[str] = set()

    def submit(self, name: str, setup: Callable[[], Any], cleanup: Callable[[Any], None] | None = None) -> None:
        """Start ``setup``; ``cleanup`` undoes what it made if no test asks for it (an image left in storage)."""
        self.started[name] = self.pool.submit(setup)
        if cleanup is not None:
            self.cleanups[name] = cleanup

    def result(self, name: str) -> Any:
        """What setup ``name`` made, once it is done; its exception if it failed. The caller owns it now."""
        if name not in self.started:
            raise LookupError(f"no head start for {name!r}: the session's first test did not see its tier")
        self.taken.add(name)
        return self.started[name].result()

    def close(self) -> None:
        """At the end of the session: drop what was not started, wait for what was, and clean up what was made
        and never asked for."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for name, cleanup in self.cleanups.items():
            future = self.started[name]
            if name not in self.taken and not future.cancelled() and future.exception() is None:
                cleanup(future.result())
