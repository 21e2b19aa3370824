"""Startup, the same for every process (one worker or many, the CLI's ``check``):

1. ``load``: the plugin manager, discovery, then each model loaded and
   self-tested (``loading.load_model``), giving immutable records; blocking.
2. ``build_server``: the hooks that need the server run (health checks,
   catalogue metadata) and each model gets its serving state; ``--strict``
   stops here on any failure.
3. ``start_models`` (in the app's lifespan, inside the event loop): each
   model's runtime is made (inline calls calibrated) and swapped in;
   ``stop_models`` closes them at shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pluggy

from stevedore_server.base.errors import StartupError, unknown_name
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.plugins.discovery import Candidate, PluginPipelines, accepted, find_installed, plugin_pipelines
from stevedore_server.plugins.hooks import Hooks
from stevedore_server.plugins.installed import check_selection
from stevedore_server.plugins.loading import LoadedModel, lazy, not_loaded
from stevedore_server.plugins.model_files import model_files
from stevedore_server.processes import isolation

from . import pipelines, serving
from .payload_log import PayloadLog
from .served_models import Registry, Snapshot
from .server import ModelServer
from .serving import ServingModel

logger = logging.getLogger("stevedore.startup")

#: What the environments of models with a ``python`` of their own provide, and have installed:
#: ``isolation.isolated_candidates``.
Environments = tuple[list[Candidate], list[PluginFailure], set[str], list[PluginSource]]


@dataclass(frozen=True)
class Loaded:
    """What loading gave: every model's record, the plugins that failed, and the hooks."""

    models: tuple[LoadedModel, ...]
    failures: tuple[PluginFailure, ...]
    hooks: Hooks
    #: The pipelines the plugins ship (``stevedore.pipelines``), by name.
    pipelines: PluginPipelines = dataclasses.field(default_factory=dict)


def load(settings: Settings, manager: pluggy.PluginManager | None = None) -> Loaded:
    """Discover, load and self-test every selected model.

    A ``manager`` may be given (tests do): its plugins then replace the installed entry points.
    """
    environments = isolation.isolated_candidates(settings)
    candidates, failures, hooks = find(settings, manager, environments)
    shipped: PluginPipelines = {}
    if manager is None:  # a given manager's plugins are not installed: no selection names them
        check_selected(settings, environments)
        shipped, pipeline_failures = plugin_pipelines(settings.selection)
        failures += pipeline_failures
    check_tables(settings, candidates, failures)
    models = tuple(load_selected(settings, candidate) for candidate in candidates)
    unknown = set(settings.load_models) - {"all", "none"} - {candidate.predictor.name for candidate in candidates}
    if unknown:
        logger.warning("load_models names models no installed plugin provides: %s", ", ".join(sorted(unknown)))
    return Loaded(models, tuple(failures), hooks, shipped)


def check_selected(settings: Settings, environments: Environments) -> None:
    """``UnknownPlugins`` if the selection names a plugin installed neither here nor in a model's own environment
    (``environments``: what they have installed, selected or not)."""
    check_selection(settings.selection, environments[3])


def check_tables(settings: Settings, candidates: list[Candidate], failures: list[PluginFailure]) -> None:
    """Warn of each ``[models.NAME]`` table that matches no model (a typo, a plugin not installed or failed): its
    settings apply to nothing. Under ``--strict``, a ``StartupError``. A table with a ``uri`` declares a model."""
    names = {candidate.predictor.name for candidate in candidates}
    unmatched = sorted(name for name, table in settings.models.items() if table.uri is None and name not in names)
    if not unmatched:
        return
    where = f" in {settings.config}" if settings.config else ""
    problems = [unmatched_table(f"table [models.{name}]{where}", name, names, failures) for name in unmatched]
    if settings.strict:
        raise StartupError("--strict: " + "\n  ".join(problems))
    for problem in problems:
        logger.warning("%s", problem)


def unmatched_table(table: str, name: str, names: set[str], failures: list[PluginFailure]) -> str:
    """Why ``table`` applies to nothing: the closest models and the names, and a plugin of its name that failed."""
    problem = f"{table} matches no model, so its settings apply to nothing{unknown_name(name, names)}"
    failed = next((failure for failure in failures if failure.source.entry_point == name), None)
    if failed is not None:
        problem += f"; plugin {failed.source.describe()} failed: {failed.error}"
    return problem


def load_selected(settings: Settings, candidate: Candidate) -> LoadedModel:
    """The model loaded and self-tested if ``load_models`` selects it (its record as lazy if it loads on its first
    request), else its record as not loaded."""
    name = candidate.predictor.name
    if not settings.loads_at_startup(name):
        return not_loaded(candidate.predictor, candidate.source)
    if settings.loads_lazily(name):
        return lazy(candidate.predictor, candidate.source)
    return isolation.load_candidate(candidate, settings)


def find(
    settings: Settings, manager: pluggy.PluginManager | None = None, environments: Environments | None = None
) -> tuple[list[Candidate], list[PluginFailure], Hooks]:
    """The selected predictors, not loaded, those of models in environments of their own among them: names
    checked, a duplicate name and version a ``StartupError``. ``environments``: what those environments said
    before (``isolation.isolated_candidates``; the repository keeps it), else each is asked now."""
    candidates, failures, hooks = find_installed(settings.selection, manager, model_files(settings))
    if environments is None:
        environments = isolation.isolated_candidates(settings)
    isolated, isolated_failures, names, _ = environments
    if names:  # a model with an environment of its own is that environment's, even where the server has one too
        candidates = [candidate for candidate in candidates if candidate.predictor.name not in names] + isolated
        failures += isolated_failures
    return accepted(candidates, failures), failures, hooks


def build_server(
    settings: Settings, loaded: Loaded, metrics: Metrics | None = None, serves_http: bool = True
) -> ModelServer:
    """The server of the loaded models: health checks, the plugins' routes (where it ``serves_http``: not a Ray
    replica) and catalogue metadata from the hooks, which receive it."""
    registry = Registry(Snapshot.of(serving.describe(model, {}) for model in loaded.models), list(loaded.failures))
    server = ModelServer(settings, registry, metrics or Metrics())
    server.payload_log = PayloadLog(settings, loaded.hooks, server, server.metrics)
    server.pipelines = pipelines.build(settings.pipelines, loaded.pipelines, server.inference, server.metrics)
    checks, failures = loaded.hooks.health_checks(server)
    registry.health_checks = checks
    registry.plugin_failures += failures
    if serves_http:
        server.plugin_routes, failures = loaded.hooks.routes(server)
        registry.plugin_failures += failures
    for model in registry.models:
        metadata, failures = loaded.hooks.catalogue_metadata(model.predictor, server)
        registry.plugin_failures += failures
        registry.replace(dataclasses.replace(model, metadata=metadata))
    if settings.strict and registry.failures:
        raise StartupError("--strict: not every plugin and model loaded:\n  " + "\n  ".join(registry.failures))
    return server


#: Gives a model its runtime (``serving.start`` by default).
StartModel = Callable[[ServingModel, Settings, Metrics], Awaitable[ServingModel]]


async def start_models(server: ModelServer, start: StartModel = serving.start) -> None:
    """Give each model its runtime, inside the running event loop, and publish the models' metrics."""
    server.metrics.describe_server()
    for model in server.registry.models:
        server.registry.replace(await start(model, server.settings, server.metrics))
        source = model.source
        plugin = None
        if source.distribution and source.distribution_version:
            plugin = (source.distribution, source.distribution_version)
        server.metrics.describe_model(model.name, model.version, model.ready, plugin)


async def check_pipelines(server: ModelServer) -> None:
    """Check every pipeline against the models now served (once they run); ``--strict`` stops on a failed one."""
    await server.pipelines.check()
    pipelines.check_strict(server.pipelines, server.settings.strict)


def stop_models(server: ModelServer) -> None:
    for model in server.registry.models:
        if model.runtime is not None:
            model.runtime.close()
