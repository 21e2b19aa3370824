"""The models of one server process, by name and version, swapped whole while serving.

The registry holds an immutable snapshot of every ``ServingModel``; lookups read
it, and ``replace`` builds a new snapshot and swaps it in with one assignment,
so a request sees either the old model or the new one, never half of each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from stevedore_server.base.errors import NotFound
from stevedore_server.base.health import HealthCheck
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.predictor import Predictor

from .serving import ServingModel


def version_key(versions: Iterable[str]) -> Callable[[str], Any]:
    """PEP 440 ordering when every version parses, else string order."""
    try:
        for version in versions:
            Version(version)
    except InvalidVersion:
        return str
    return Version


@dataclass(frozen=True)
class Snapshot:
    """Every model in discovery order, and each name's versions, highest first."""

    models: tuple[ServingModel, ...]
    by_name: Mapping[str, tuple[ServingModel, ...]]

    @classmethod
    def of(cls, models: Iterable[ServingModel]) -> Snapshot:
        ordered = tuple(models)
        grouped: dict[str, list[ServingModel]] = {}
        for model in ordered:
            grouped.setdefault(model.name, []).append(model)
        by_name = {}
        for name, versions in grouped.items():
            key = version_key(model.version for model in versions)
            by_name[name] = tuple(sorted(versions, key=lambda model: key(model.version), reverse=True))
        return cls(ordered, by_name)


@dataclass
class Registry:
    """The served models, the plugins that failed, and the health checks of this process."""

    snapshot: Snapshot = field(default_factory=lambda: Snapshot.of(()))
    plugin_failures: list[PluginFailure] = field(default_factory=list)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def models(self) -> tuple[ServingModel, ...]:
        return self.snapshot.models

    def replace(self, model: ServingModel) -> ServingModel | None:
        """Serve ``model`` in place of the one of its name and version (added if there is none); returns the one
        replaced. Calls already holding the old one finish on it."""
        current = self.snapshot
        old = next((m for m in current.models if (m.name, m.version) == (model.name, model.version)), None)
        models = [model if m is old else m for m in current.models] if old else [*current.models, model]
        self.snapshot = Snapshot.of(models)
        return old

    @property
    def failures(self) -> list[str]:
        """Why the server is not ready, one line per failed plugin or model (a model not loaded is no failure)."""
        lines = [f"plugin {f.source.describe()}: {f.error}" for f in self.plugin_failures]
        lines += [f"model {m.name} version {m.version}: {m.reason or m.state}" for m in self.models if m.failed]
        return lines

    def names(self) -> list[str]:
        return list(self.snapshot.by_name)

    def versions_of(self, name: str) -> tuple[ServingModel, ...]:
        """The versions of one model, highest first."""
        return self.snapshot.by_name.get(name, ())

    def latest(self) -> list[ServingModel]:
        """The highest version of every model, in discovery order."""
        return [versions[0] for versions in self.snapshot.by_name.values()]

    def get(self, name: str, version: str | None = None) -> ServingModel:
        """The model of a name and version (the highest version when None), or NotFound."""
        versions = self.snapshot.by_name.get(name)
        if not versions:
            raise NotFound(f"no model named {name!r}")
        if version is None:
            return versions[0]
        for model in versions:
            if model.version == version:
                return model
        raise NotFound(f"model {name!r} has no version {version!r}")

    def source_of(self, predictor: Predictor) -> PluginSource | None:
        """The plugin that provided ``predictor``, if it is one of this registry's."""
        return next((model.source for model in self.models if model.predictor is predictor), None)

    def uptime(self) -> float:
        return time.monotonic() - self.started
