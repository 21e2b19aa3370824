"""Built-in behaviour, as plain modules registered through the same hooks outside plugins use (datasette's
``DEFAULT_PLUGINS``, llm's ``default_plugins/``). Each implementation is ``trylast``, so a plugin can
override it."""

from __future__ import annotations

from types import ModuleType

from . import catalogue, health, payload_log

#: Registered by ``plugins.get_plugin_manager`` on every manager, under their module names.
DEFAULT_PLUGINS: tuple[ModuleType, ...] = (health, catalogue, payload_log)
