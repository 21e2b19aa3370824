"""What ``stevedore-server check`` does and says: each selected model loaded and self-tested as at startup,
reported one line a model and one a failed plugin.

The pytest plugin for plugin authors (``stevedore_server.pytest_plugin``) checks one model at
a time through ``check_one``, and the plugins' routes once (``route_problems``), so a plugin's tests fail with
these same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginFailure
from stevedore_server.core import startup
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.hooks import Hooks
from stevedore_server.plugins.loading import not_loaded
from stevedore_server.plugins.routes import PluginRoute
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
    hooks that run then (catalogue metadata, health checks); what ``check`` would say of it. Not the plugins'
    routes: one model alone would fail a route under a sibling model (``route_problems`` checks them all once)."""
    loaded = isolation.load_candidate(candidate, settings)
    registry = startup.build_server(settings, startup.Loaded((loaded,), (), hooks), serves_http=False).registry
    [model] = registry.models
    return model, Report.of(registry)


def route_problems(settings: Settings, candidates: Sequence[Candidate], hooks: Hooks) -> list[str]:
    """What ``check`` says of the plugins' own routes (``stevedore_routes``), for the models of ``candidates``
    listed, not loaded: a route may go under any model of its plugin, and its hook needs no model loaded."""
    listed = tuple(not_loaded(candidate.predictor, candidate.source) for candidate in candidates)
    server = startup.build_server(settings, startup.Loaded(listed, (), hooks), serves_http=False)
    routes, failures = hooks.routes(server)
    return [plugin_line(failure) for failure in failures] + shadowing(routes, settings)


def shadowing(routes: Sequence[PluginRoute], settings: Settings) -> list[str]:
    """The line of a plugin's route that would shadow a built-in route or another plugin's: the server's
    startup refuses it (``frontends.web.plugin_routes``)."""
    # The web front end (Starlette) only when routes are checked: every command of the CLI imports this module.
    from stevedore_server.frontends.app import route_table
    from stevedore_server.frontends.web.plugin_routes import serve_routes

    try:
        serve_routes(routes, route_table(settings))
    except StartupError as error:
        return [f"routes: FAILED: {error}"]
    return []
