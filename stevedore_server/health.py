"""Health checks: what a check is, and running them all (a check that raises has failed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

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
