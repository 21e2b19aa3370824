"""A head start for the slow setups of the heavy tiers: built on a thread of their own from the start of the
session, while the first tests run on the other core.

    head_start.submit("wheelhouse", lambda: build(root))  # at the start of the session (conftest's head_start)
    wheelhouse = head_start.result("wheelhouse")          # in the fixture that needs it: waits, or raises

pytest runs one test at a time, so one of the machine's two cores idles through most of the unit tests. The
wheelhouse, the container tier's image and the Ray tier's environment are built there instead, one after the
other (heavy runs one at a time), each only when its tier is among the session's tests. A setup that fails
raises its error in the fixture that asks for it, as if the fixture had run it.

pytest keeps a failed session fixture's error and raises it again for every test that asks for the fixture (and
for every fixture built on it): one broken wheelhouse made 141 errors, each with the whole of pip's output. So
the head start is also a plugin of the session (``conftest.head_start`` registers it): the first test that a
setup's error fails shows it in full, and the others are skipped with one line that names that test: the run
fails once, with its cause.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest


class HeadStart:
    """Setups started ahead, by name, on one thread."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="head-start")
        self.started: dict[str, Future[Any]] = {}
        self.cleanups: dict[str, Callable[[Any], None]] = {}
        self.taken: set[str] = set()
        #: The test whose report shows a failed setup's error in full, by the setup's name.
        self.shown_in: dict[str, str] = {}

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

    def failed_setup(self, error: BaseException) -> str | None:
        """The name of the setup that raised ``error``: the first, where later ones raised it again as they
        failed on its result (the example image on the wheelhouse); None if no setup did."""
        for name, future in self.started.items():
            if future.done() and not future.cancelled() and future.exception() is error:
                return name
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """A failed setup's error in full in the first test it fails (the run fails once, with the cause); each
        later one is reported skipped, with a line naming that test."""
        report = yield
        name = self.failed_setup(call.excinfo.value) if report.failed and call.excinfo is not None else None
        if name is not None:
            first = self.shown_in.setdefault(name, item.nodeid)
            if first != item.nodeid:  # the run fails once, there; the others could not run and say why
                report.outcome = "skipped"
                reason = f"Skipped: the head start's {name} failed: its error is shown at {first}"
                report.longrepr = (str(item.path), item.location[1] or 0, reason)
        return report
