"""What ``stevedore-server check`` does and says: each selected model loaded and self-tested as at startup,
reported one line a model and one a failed plugin.

The pytest plugin for plugin authors (``stevedore_server.pytest_plugin``) checks one model at
a time through ``check_one``, so a plugin's tests fail with these same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginFailure
from stevedore_server.core import startup
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.hooks import Hooks
from stevedore_server.processes import isolation


@dataclass(frozen=True)
class Report:
    """The lines ``stevedore-server check`` prints for some models and plugins; ``failures``, those that failed."""

    lines: tuple[str, ...]
    failures: tuple[str, ...]

    @classmethod
    def of(cls, registry: Registry) -> Report:
        plugins = [plugin_line(failure) for failure in registry.plugin_failures]
        failed_models = [model_line(model) for model in registry.models if model.failed]
        return cls(tuple([model_line(model) for model in registry.models] + plugins), tuple(failed_models + plugins))


def model_line(model: ServingModel) -> str:
    status = "ok" if model.ready else f"FAILED: {model.reason}"
    return f"{model.name} {model.version} ({model.source.describe()}): {status}"


def plugin_line(failure: PluginFailure) -> str:
    return f"plugin {failure.source.describe()}: FAILED: {failure.error}"


def check_one(settings: Settings, candidate: Candidate, hooks: Hooks) -> tuple[ServingModel, Report]:
    """One model loaded, self-tested and given its serving state as the server's startup does, with the
    hooks that run then (catalogue metadata, health checks); what ``check`` would say of it."""
    loaded = isolation.load_candidate(candidate, settings)
    # No routes: one model alone would fail a plugin's route under a sibling model (`check` asks for them all).
    registry = startup.build_server(settings, startup.Loaded((loaded,), (), hooks), serves_http=False).registry
    [model] = registry.models
    return model, Report.of(registry)
