"""Helpers shared by the tests (the fixtures live in conftest.py, which imports from here, never the reverse)."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from stevedore_server.plugins.manager import get_plugin_manager


class Registers:
    """A test plugin contributing the given predictors through the registration hook."""

    def __init__(self, *predictors: object) -> None:
        self.predictors = predictors

    @pluggy.HookimplMarker("stevedore")
    def stevedore_register_predictors(self, register: Callable[[object], None]) -> None:
        for predictor in self.predictors:
            register(predictor)


def fresh_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with only the default plugins and the given ones: no entry points of the machine."""
    manager, failures = get_plugin_manager(load_entry_points=False)
    if failures:
        raise AssertionError(f"a manager without entry points reported failures: {failures}")
    for plugin in plugins:
        manager.register(plugin)
    return manager
