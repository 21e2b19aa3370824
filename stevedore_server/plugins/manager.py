"""Building the plugin manager: the hook specifications, the default plugins and the ``stevedore.hooks`` entry
points. A factory, not a module global, so each server (and each test) has a fresh one."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pluggy

from stevedore_server import hookspecs
from stevedore_server.base.errors import StartupError
from stevedore_server.base.sources import HOOKS_GROUP, PluginFailure, PluginSelection, PluginSource, failure

from .builtin import DEFAULT_PLUGINS
from .installed import iter_entry_points

logger = logging.getLogger("stevedore.plugins")


def hook_sources() -> dict[str, PluginSource]:
    """The source of each hook plugin, by the name it is registered under (its entry point's)."""
    return {entry_point.name: PluginSource.of(entry_point) for entry_point in iter_entry_points(HOOKS_GROUP)}


def get_plugin_manager(
    selection: PluginSelection | None = None,
    load_entry_points: bool = True,
    plugins: Iterable[object] = (),
) -> tuple[pluggy.PluginManager, list[PluginFailure]]:
    """A fresh plugin manager with the default plugins, the selected ``stevedore.hooks`` entry points (unless
    ``load_entry_points`` is false: tests) and ``plugins``.

    Returns the manager and the hook plugins that failed to load. Hook
    implementations that match no specification are a ``StartupError``.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for default in DEFAULT_PLUGINS:
        manager.register(default, name=default.__name__)
    failures = _load_hook_entry_points(manager, selection or PluginSelection()) if load_entry_points else []
    for plugin in plugins:
        manager.register(plugin)
    check_hooks(manager)
    return manager, failures


def check_hooks(manager: pluggy.PluginManager) -> None:
    """Reject hook implementations that match no specification, naming the plugin."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        name = manager.get_name(error.plugin) or repr(error.plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("stevedore_")))
        raise StartupError(f"plugin {name!r} implements an unknown hook ({error}); the hooks are: {known}") from None


def _load_hook_entry_points(manager: pluggy.PluginManager, selection: PluginSelection) -> list[PluginFailure]:
    failures = []
    for entry_point in iter_entry_points(HOOKS_GROUP):
        source = PluginSource.of(entry_point)
        if not selection.allows(source):
            manager.set_blocked(entry_point.name)
            logger.info("hook plugin not selected: %s", source.describe())
            continue
        try:
            manager.register(entry_point.load(), name=entry_point.name)
        except pluggy.PluginValidationError as error:
            raise StartupError(f"{source.describe()}: {error}") from None
        except Exception as error:  # a broken plugin must not take the server down
            failures.append(failure(source, error))
    return failures
