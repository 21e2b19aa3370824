"""Startup: plugins, discovery, loading and self-tests, hooks. Everything a served process needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pluggy

from .default_plugins import default_plugins
from .discovery import discover
from .errors import StartupError
from .hookspecs import HealthCheck
from .plugins import PluginFailure, PluginSource, call_each, check_hooks, failure, get_plugin_manager
from .registry import ModelEntry, Registry
from .settings import Settings
from .v2.signature import NoTensorInterface, signature_of

logger = logging.getLogger("stevedore.loader")


@dataclass
class Loaded:
    """A loaded registry with the plugin manager whose hooks serve it."""

    registry: Registry
    manager: pluggy.PluginManager


def load(settings: Settings, manager: pluggy.PluginManager | None = None) -> Loaded:
    """Discover, load and self-test every selected model; collect health checks and catalogue metadata.

    Under ``settings.strict`` any failure is a ``StartupError``. A ``manager``
    may be given (tests do): its plugins then replace the installed entry points.
    """
    hook_failures: list[PluginFailure] = []
    from_entry_points = manager is None
    if manager is None:
        manager, hook_failures = get_plugin_manager(settings.selection)
    candidates, failures = discover(manager, settings.selection, entry_points=from_entry_points)
    registry = Registry.from_candidates(candidates, hook_failures + failures)
    registry.load_all()
    for entry in registry.entries:
        attach_signature(entry)
    for name, plugin in default_plugins(registry):
        manager.register(plugin, name=name)
    check_hooks(manager)
    registry.health_checks = _health_checks(manager, registry)
    for entry in registry.entries:
        entry.metadata = _catalogue_metadata(manager, registry, entry.predictor)
    if settings.strict and registry.failures:
        raise StartupError("--strict: not every plugin and model loaded:\n  " + "\n  ".join(registry.failures))
    return Loaded(registry, manager)


def attach_signature(entry: ModelEntry) -> None:
    """The entry's V2 tensors, or the reason it has none (logged: its other routes still work)."""
    if not entry.ready:
        entry.no_tensor_reason = f"the model is not ready: {entry.reason}"
        return
    try:
        entry.signature = signature_of(entry)
    except NoTensorInterface as error:
        entry.no_tensor_reason = str(error)
        logger.warning("model %s version %s has no V2 interface: %s", entry.name, entry.version, error)
    except Exception as error:  # a plugin's odd declaration must not stop the server
        entry.no_tensor_reason = f"its tensors could not be worked out: {type(error).__name__}: {error}"
        logger.error("model %s version %s has no V2 interface", entry.name, entry.version, exc_info=error)


def _health_checks(manager: pluggy.PluginManager, registry: Registry) -> dict[str, HealthCheck]:
    checks: dict[str, HealthCheck] = {}
    owners: dict[str, str] = {}
    for plugin_name, result, error in call_each(manager, "stevedore_health_checks"):
        if error is None and result is not None and not hasattr(result, "items"):
            error = TypeError(f"stevedore_health_checks must return a mapping, got {type(result).__name__}")
        if error is not None:
            registry.plugin_failures.append(failure(PluginSource(plugin_name, group="stevedore_health_checks"), error))
            continue
        for name, check in (result or {}).items():
            if name in owners:
                raise StartupError(f"health check {name!r} is given by both {owners[name]} and {plugin_name}")
            owners[name] = plugin_name
            checks[name] = check
    return checks


def _catalogue_metadata(manager: pluggy.PluginManager, registry: Registry, predictor: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    results = list(call_each(manager, "stevedore_catalogue_metadata", predictor=predictor))
    # The first plugin called wins a shared key, so apply the results last-called first.
    for plugin_name, result, error in reversed(results):
        if error is None and result is not None and not isinstance(result, dict):
            error = TypeError(f"stevedore_catalogue_metadata must return a dict or None, got {type(result).__name__}")
        if error is not None:
            source = PluginSource(plugin_name, group="stevedore_catalogue_metadata")
            registry.plugin_failures.append(failure(source, error))
        elif result:
            metadata.update(result)
    return metadata
