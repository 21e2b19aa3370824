"""Built-in health checks: every selected plugin loaded and every model self-tested; with no model, why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stevedore_server.base.sources import PREDICTORS_GROUP
from stevedore_server.hookspecs import HealthCheck, hookimpl

from .. import installed

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
        return False, why_no_models(server)
    if failed:
        return False, f"{len(failed)} of {len(models)} models not ready: " + "; ".join(failed)
    ready = sum(m.ready for m in models)
    return True, f"{ready} models ready" + (f", {len(models) - ready} not loaded" if ready < len(models) else "")


def why_no_models(server: Server) -> str:
    """Whether no plugin providing models is installed, or none is selected, or those selected provide none."""
    selection = server.settings.selection
    provided = installed.installed_plugins((PREDICTORS_GROUP,))
    if not provided:
        return f"no models installed: pip install a plugin that provides {PREDICTORS_GROUP}"
    selected = [source for source in provided if selection.allows(source)]
    if not selected:
        return (
            f"no plugin selected: {installed.selection_flags(selection)} selects none of the installed "
            f"{installed.listed_plugins(provided)}"
        )
    return f"no models: the selected plugins ({installed.listed_plugins(selected)}) provide none"


def plugins_check(server: Server) -> tuple[bool, str]:
    """Every selected plugin loaded at startup; one a repository load found failing since is told, but the
    server stays ready: what it serves is as it was."""
    failed = server.registry.plugin_failures
    described = "; ".join(f"{f.source.describe()}: {f.error}" for f in failed)
    if not all(f.found_by_load for f in failed):
        return False, described
    return True, "every selected plugin loaded" + (f"; since, a repository load found: {described}" if failed else "")
