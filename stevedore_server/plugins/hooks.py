"""The one way the server calls hooks: a typed facade over pluggy (as tox's plugin manager is).

Each implementation is called on its own, so a failing one is reported as a
failed plugin (which plugin, which hook, why) and the others' results are kept.
A wrapper implementation (``wrapper=True`` or ``hookwrapper=True``) is refused
where a result is expected: called alone it returns a generator, not a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from stevedore_server.base.errors import StartupError
from stevedore_server.base.health import HealthCheck
from stevedore_server.base.inference_records import InferenceRecord
from stevedore_server.base.scopes import INFER
from stevedore_server.base.sources import PluginFailure, PluginSource, failure
from stevedore_server.predictor import Predictor

from .routes import PluginRoute, checked_route, checked_scope

if TYPE_CHECKING:
    from .host import Server


@dataclass(frozen=True)
class HookResult:
    """One implementation's answer: its plugin, its value, or the error it raised."""

    plugin: str
    value: Any
    error: BaseException | None


class Hooks:
    """Typed calls of every hook of a plugin manager; ``sources`` names the entry point of each hook plugin."""

    def __init__(self, manager: pluggy.PluginManager, sources: Mapping[str, PluginSource] | None = None) -> None:
        self.manager = manager
        self.sources = dict(sources or {})

    def register_predictors(self) -> tuple[list[tuple[Predictor, PluginSource]], list[PluginFailure]]:
        """Predictors registered through ``stevedore_register_predictors``, each with its plugin's source."""
        registered: list[tuple[Predictor, PluginSource]] = []
        failures: list[PluginFailure] = []
        found: list[Predictor] = []

        def register(predictor: Predictor) -> None:
            if not isinstance(predictor, Predictor):
                raise TypeError(f"register() takes a Predictor instance, got {type(predictor).__name__}")
            found.append(predictor)

        hook = self.manager.hook.stevedore_register_predictors
        for result in self._each(hook, register=register):
            source = self.source(result.plugin, "stevedore_register_predictors")
            if result.error is not None:
                failures.append(failure(source, result.error))
            else:
                registered += [(predictor, source) for predictor in found]
            found.clear()
        return registered, failures

    def health_checks(self, server: Server) -> tuple[dict[str, HealthCheck], list[PluginFailure]]:
        """Every plugin's health checks; a name given twice is a ``StartupError`` naming both plugins."""
        checks: dict[str, HealthCheck] = {}
        owners: dict[str, str] = {}
        failures: list[PluginFailure] = []
        hook = self.manager.hook.stevedore_health_checks
        for result in self._each(hook, server=server):
            error = result.error
            if error is None and result.value is not None and not hasattr(result.value, "items"):
                error = TypeError(f"stevedore_health_checks must return a mapping, got {type(result.value).__name__}")
            if error is not None:
                failures.append(failure(self.source(result.plugin, "stevedore_health_checks"), error))
                continue
            for name, check in (result.value or {}).items():
                if name in owners:
                    raise StartupError(f"health check {name!r} is given by both {owners[name]} and {result.plugin}")
                owners[name] = result.plugin
                checks[name] = check
        return checks, failures

    def catalogue_metadata(self, predictor: Predictor, server: Server) -> tuple[dict[str, Any], list[PluginFailure]]:
        """The catalogue fields of ``predictor``: where two plugins give a key, the one called first wins."""
        metadata: dict[str, Any] = {}
        failures: list[PluginFailure] = []
        hook = self.manager.hook.stevedore_catalogue_metadata
        results = list(self._each(hook, predictor=predictor, server=server))
        for result in reversed(results):  # applied last-called first, so the first called wins
            error = result.error
            if error is None and result.value is not None and not isinstance(result.value, dict):
                error = TypeError(
                    f"stevedore_catalogue_metadata must return a dict or None, got {type(result.value).__name__}"
                )
            if error is not None:
                failures.append(failure(self.source(result.plugin, "stevedore_catalogue_metadata"), error))
            elif result.value:
                metadata.update(result.value)
        return metadata, failures

    def routes(self, server: Server) -> tuple[list[PluginRoute], list[PluginFailure]]:
        """Every plugin's own routes (``stevedore_routes``), each placed under its model or its distribution; a
        plugin that raises, registers what cannot be a route, or names a model not its own is a failure."""
        routes: list[PluginRoute] = []
        failures: list[PluginFailure] = []
        found: list[tuple[str, Callable[..., Any], tuple[str, ...], str | None, str]] = []

        def register(
            path: str,
            endpoint: Callable[..., Any],
            methods: Sequence[str] = ("GET",),
            model: str | None = None,
            scope: str = INFER,
        ) -> None:
            checked_path, checked_methods = checked_route(path, endpoint, methods)
            found.append((checked_path, endpoint, checked_methods, model, checked_scope(checked_path, scope)))

        hook = self.manager.hook.stevedore_routes
        for result in self._each(hook, server=server, register=register):
            source = self.source(result.plugin, "stevedore_routes")
            distribution = source.distribution or result.plugin
            try:
                if result.error is not None:
                    raise result.error
                placed = [
                    PluginRoute(path, endpoint, methods, source.describe(), model, distribution, scope)
                    for path, endpoint, methods, model, scope in found
                ]
                for route in placed:
                    check_owner(route, source, server)
            except Exception as error:
                failures.append(failure(source, error))
            else:
                routes += placed
            found.clear()
        return routes, failures

    def inference_logged(
        self, record: InferenceRecord, server: Server, more: bool = False
    ) -> list[tuple[str, BaseException]]:
        """Hand ``record`` to every ``stevedore_inference_logged`` implementation; those that raised, by plugin."""
        hook = self.manager.hook.stevedore_inference_logged
        results = self._each(hook, record=record, server=server, more=more)
        return [(result.plugin, result.error) for result in results if result.error is not None]

    def inference_loggers(self) -> list[str]:
        """The plugins implementing ``stevedore_inference_logged`` (the built-in sinks' among them)."""
        implementations = self.manager.hook.stevedore_inference_logged.get_hookimpls()
        return [implementation.plugin_name for implementation in implementations]

    def source(self, plugin: str, hook_name: str) -> PluginSource:
        """The entry point a hook plugin came from, or a source naming the plugin and the hook."""
        return self.sources.get(plugin) or PluginSource(entry_point=plugin, group=hook_name)

    @staticmethod
    def _each(hook: pluggy.HookCaller, **arguments: Any) -> Iterator[HookResult]:
        """Each implementation called alone, in pluggy's call order (``tryfirst`` first, ``trylast`` last)."""
        for implementation in reversed(hook.get_hookimpls()):
            if implementation.wrapper or implementation.hookwrapper:
                refused = TypeError(f"{hook.name} expects a result; a wrapper implementation cannot give one")
                yield HookResult(implementation.plugin_name, None, refused)
                continue
            call: Callable[..., Any] = implementation.function
            try:
                value = call(*[arguments[name] for name in implementation.argnames])
            except Exception as error:
                yield HookResult(implementation.plugin_name, None, error)
                continue
            yield HookResult(implementation.plugin_name, value, None)


def check_owner(route: PluginRoute, source: PluginSource, server: Server) -> None:
    """LookupError unless the model a route goes under is served here and, for an installed plugin, its own."""
    if route.model is None:
        return
    models = [model for model in server.registry.models if model.name == route.model]
    if not models:
        raise LookupError(f"{route.describe()}: there is no model {route.model!r}")
    owners = {model.source.distribution for model in models}
    if source.distribution is not None and source.distribution not in owners:
        raise LookupError(f"{route.describe()}: model {route.model!r} is not of {source.distribution}")
