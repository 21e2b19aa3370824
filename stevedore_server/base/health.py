"""Health checks: what a check is, and running them all (a check that raises has failed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio

    from .lifecycle import Lifecycle

logger = logging.getLogger("stevedore.health")

#: A health check: no arguments, ``(ok, detail)``.
HealthCheck = Callable[[], tuple[bool, str]]


def run_checks(checks: Mapping[str, HealthCheck]) -> dict[str, dict[str, Any]]:
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


async def readiness_problems(
    checks: Mapping[str, HealthCheck], lifecycle: Lifecycle, limiter: anyio.CapacityLimiter
) -> list[str]:
    """Why the server is not ready, for every front end: draining after SIGTERM, or a failing health check (run
    off the event loop on ``limiter``'s threads, as plugins' checks may block)."""
    if lifecycle.draining:
        return ["shutting down: draining in-flight requests"]
    return failing(await health_report(checks, limiter))


async def health_report(checks: Mapping[str, HealthCheck], limiter: anyio.CapacityLimiter) -> dict[str, dict[str, Any]]:
    from anyio import to_thread  # here: a worker process imports this module for ``HealthCheck`` alone

    return await to_thread.run_sync(run_checks, checks, limiter=limiter)
