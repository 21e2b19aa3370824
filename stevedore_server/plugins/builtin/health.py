"""Built-in health checks: every selected plugin loaded and every model self-tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stevedore_server.hookspecs import HealthCheck, hookimpl

if TYPE_CHECKING:
    from stevedore_server.plugins.host import Server


#: The names of the built-in checks.
BUILT_IN_CHECKS = ("models", "plugins")


@hookimpl(trylast=True)
def stevedore_health_checks(server: Server) -> Mapping[str, HealthCheck]:
    models, plugins = BUILT_IN_CHECKS
    return {models: lambda: models_check(server), plugins: lambda: plugins_check(server)}


def models_check(server: Server) -> tuple[bool, str]:
    """Every model loaded is self-tested (one not loaded, by ``load_models`` or an unload, is no failure); read
    when the check runs, as models may be loaded and unloaded while serving."""
    models = server.registry.models
    failed = [f"{m.name} {m.version}: {m.reason or m.state}" for m in models if m.failed]
    if not models:
        return False, "no models installed: pip install a plugin that provides stevedore.predictors"
    if failed:
        return False, f"{len(failed)} of {len(models)} models not ready: " + "; ".join(failed)
    ready = sum(m.ready for m in models)
    return True, f"{ready} models ready" + (f", {len(models) - ready} not loaded" if ready < len(models) else "")


def plugins_check(server: Server) -> tuple[bool, str]:
    failed = server.registry.plugin_failures
    if failed:
        return False, "; ".join(f"{f.source.describe()}: {f.error}" for f in failed)
    return True, "every selected plugin loaded"
