"""Built-in health checks: every selected plugin loaded and every model self-tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..hookspecs import HealthCheck, hookimpl

if TYPE_CHECKING:
    from ..registry import Registry


class ModelHealth:
    """The ``models`` and ``plugins`` checks of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @hookimpl(trylast=True)
    def stevedore_health_checks(self) -> Mapping[str, HealthCheck]:
        return {"models": self.models, "plugins": self.plugins}

    def models(self) -> tuple[bool, str]:
        entries = self.registry.entries
        not_ready = [f"{e.name} {e.version}: {e.reason or e.state}" for e in entries if not e.ready]
        if not entries:
            return False, "no models installed: pip install a plugin that provides stevedore.predictors"
        if not_ready:
            return False, f"{len(not_ready)} of {len(entries)} models not ready: " + "; ".join(not_ready)
        return True, f"{len(entries)} models ready"

    def plugins(self) -> tuple[bool, str]:
        failed = self.registry.plugin_failures
        if failed:
            return False, "; ".join(f"{f.source.describe()}: {f.error}" for f in failed)
        return True, "every selected plugin loaded"
