"""Health checks and readiness: one meaning of "ready" for every route that reports it."""

from __future__ import annotations

import logging
from typing import Any

from .registry import Registry

logger = logging.getLogger("stevedore.health")


def run_checks(registry: Registry) -> dict[str, dict[str, Any]]:
    """Every health check's result; a check that raises has failed (and is logged)."""
    results = {}
    for name, check in registry.health_checks.items():
        try:
            ok, detail = check()
        except Exception as error:
            logger.warning("health check %s raised", name, exc_info=error)
            ok, detail = False, f"check raised {type(error).__name__}: {error}"
        results[name] = {"ok": bool(ok), "detail": str(detail)}
    return results


def readiness(registry: Registry) -> list[str]:
    """Why the server is not ready; empty when every model is served and every check passes.

    The built-in ``models`` and ``plugins`` checks cover the models; plugins' checks add the rest.
    """
    return [f"{name}: {result['detail']}" for name, result in run_checks(registry).items() if not result["ok"]]
