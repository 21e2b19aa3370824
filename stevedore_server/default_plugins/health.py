"""Built-in health checks: every selected plugin loaded and every model self-tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..hookspecs import HealthCheck, hookimpl

if TYPE_CHECKING:
    from ..server import ModelServer


@hookimpl(trylast=True)
def stevedore_health_checks(server: ModelServer) -> Mapping[str, HealthCheck]:
    return {"models": lambda: models_check(server), "plugins": lambda: plugins_check(server)}


def models_check(server: ModelServer) -> tuple[bool, str]:
    """Every model loaded and self-tested; read when the check runs, as models may be replaced while serving."""
    models = server.registry.models
    not_ready = [f"{m.name} {m.version}: {m.reason or m.state}" for m in models if not m.ready]
    if not models:
        return False, "no models installed: pip install a plugin that provides stevedore.predictors"
    if not_ready:
        return False, f"{len(not_ready)} of {len(models)} models not ready: " + "; ".join(not_ready)
    return True, f"{len(models)} models ready"


def plugins_check(server: ModelServer) -> tuple[bool, str]:
    failed = server.registry.plugin_failures
    if failed:
        return False, "; ".join(f"{f.source.describe()}: {f.error}" for f in failed)
    return True, "every selected plugin loaded"
