"""Health checks: what a check is, running them all (a check that raises has failed), and ``HealthChecks``, the
one cache of their results that every probe of every front end reads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio

    from .lifecycle import Lifecycle

logger = logging.getLogger("stevedore.health")

#: A health check: no arguments, ``(ok, detail)``.
HealthCheck = Callable[[], tuple[bool, str]]
#: Every check's result by the check's name: ``{"ok": bool, "detail": str}``.
Report = dict[str, dict[str, Any]]
#: Seconds a run's results answer every probe before the next probe runs the checks again.
MAX_AGE = 1.0


def run_checks(checks: Mapping[str, HealthCheck]) -> Report:
    """Every health check's result; a check that raises has failed (and is logged)."""
    results = {}
    for name, check in checks.items():
        try:
            ok, detail = check()
        except Exception as error:
            logger.warning("health check %s raised", name, exc_info=error)
            ok, detail = False, f"check raised {type(error).__name__}: {error}"
        results[name] = {"ok": bool(ok), "detail": str(detail)}
    return results


def failing(results: Mapping[str, dict[str, Any]]) -> list[str]:
    """Why the server is not ready, one line a failed check; empty when every check passes.

    The built-in ``models`` and ``plugins`` checks cover the models; plugins' checks add the rest.
    """
    return [f"{name}: {result['detail']}" for name, result in results.items() if not result["ok"]]


class HealthChecks:
    """The health checks of one server process as every probe sees them (HTTP and gRPC, Check and Watch alike).

    Probes are open without a key, and plugins' checks may be slow or block: so the checks run off the event
    loop on ``limiter``'s threads, one run at a time (a probe that comes during a run awaits that run: a single
    flight), and a run's results answer every probe for ``max_age`` seconds after it ends. However many callers
    probe, the checks run at most once a ``max_age``. The report is shared: read it, never change it.
    """

    def __init__(
        self,
        checks: Mapping[str, HealthCheck],
        lifecycle: Lifecycle,
        limiter: anyio.CapacityLimiter,
        max_age: float = MAX_AGE,
    ) -> None:
        self.checks = checks
        self.lifecycle = lifecycle
        self.limiter = limiter
        self.max_age = max_age
        #: The last run's end (``time.monotonic``) and results.
        self.latest: tuple[float, Report] | None = None
        self.running: asyncio.Task[Report] | None = None

    async def report(self) -> Report:
        """Every check's result, at most ``max_age`` seconds old (or from the run under way)."""
        latest = self.latest
        if latest is not None and time.monotonic() - latest[0] < self.max_age:
            return latest[1]
        if self.running is None:
            self.running = asyncio.create_task(self.run())
        # Shielded: a caller that goes away (a client's deadline) must not cancel the run the others await.
        return await asyncio.shield(self.running)

    async def problems(self) -> list[str]:
        """Why the server is not ready: draining after SIGTERM (seen at once, never cached), or failing checks."""
        if self.lifecycle.draining:
            return ["shutting down: draining in-flight requests"]
        return failing(await self.report())

    async def run(self) -> Report:
        from anyio import to_thread  # here: a worker process imports this module for ``HealthCheck`` alone

        try:
            results = await to_thread.run_sync(run_checks, self.checks, limiter=self.limiter)
            self.latest = (time.monotonic(), results)
            return results
        finally:
            self.running = None
