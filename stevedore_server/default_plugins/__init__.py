"""Built-in behaviour, registered through the same hooks outside plugins use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .catalogue import CatalogueFields
from .health import ModelHealth

if TYPE_CHECKING:
    from ..registry import Registry


def default_plugins(registry: Registry) -> list[tuple[str, object]]:
    """The built-in plugins of one registry, as (name, plugin) pairs."""
    return [("stevedore.health", ModelHealth(registry)), ("stevedore.catalogue", CatalogueFields(registry))]
