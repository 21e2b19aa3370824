"""The models of one server process, by name and version, swapped whole while serving.

The registry holds an immutable snapshot of every ``ServingModel``; lookups read
it, and ``replace`` builds a new snapshot and swaps it in with one assignment,
so a request sees either the old model or the new one, never half of each.

Each model has one default version, the one a request without a version gets.
An installed version (a plugin's) is ordered by PEP 440; a trained version
(``trained_by_job``) by when it was made, as the jobs database's rows give it
(``TrainedOrder``, set by the jobs as they follow that table), never by its
text: a version's local part is its job's random id. The default is the newest
trained version when trained versions are promoted (``promote_trained``), else
the highest installed one. A model's versions are listed default first, then
its trained versions newest first, then its installed versions highest first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from stevedore_server.base.errors import NotFound, UnknownModel
from stevedore_server.base.health import HealthCheck
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.predictor import Predictor

from .serving import ServingModel

#: The catalogue metadata field naming the job that made a trained version (``Repository.serve_trained``).
TRAINED_BY_JOB = "trained_by_job"


def trained_by(model: ServingModel) -> str | None:
    """The job that made ``model``, a trained version; None for an installed one."""
    job = model.metadata.get(TRAINED_BY_JOB)
    return job if isinstance(job, str) else None


@dataclass(frozen=True)
class TrainedOrder:
    """Each model's trained versions in the order they were made (oldest first), and whether the newest serves
    by default."""

    made: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    promote: bool = True

    def rank(self, model: ServingModel) -> int:
        """How late ``model`` was made among its model's trained versions; -1 for one not recorded (yet)."""
        made = self.made.get(model.name, ())
        return made.index(model.version) if model.version in made else -1


def version_key(versions: Iterable[str]) -> Callable[[str], Any]:
    """PEP 440 ordering when every version parses, else string order."""
    try:
        for version in versions:
            Version(version)
    except InvalidVersion:
        return str
    return Version


def listed(versions: Sequence[ServingModel], order: TrainedOrder) -> tuple[ServingModel, ...]:
    """One model's versions: the default first, then the trained ones newest first (those not recorded yet
    last), then the installed ones highest first."""
    installed = [model for model in versions if trained_by(model) is None]
    key = version_key(model.version for model in installed)
    installed.sort(key=lambda model: key(model.version), reverse=True)
    trained = sorted((model for model in versions if trained_by(model) is not None), key=order.rank, reverse=True)
    promoted = order.promote and trained and order.rank(trained[0]) >= 0
    default = trained[0] if promoted or not installed else installed[0]
    return (default, *(model for model in [*trained, *installed] if model is not default))


@dataclass(frozen=True)
class Snapshot:
    """Every model in discovery order, and each name's versions, its default first (``listed``)."""

    models: tuple[ServingModel, ...]
    by_name: Mapping[str, tuple[ServingModel, ...]]

    @classmethod
    def of(cls, models: Iterable[ServingModel], order: TrainedOrder = TrainedOrder()) -> Snapshot:
        ordered = tuple(models)
        grouped: dict[str, list[ServingModel]] = {}
        for model in ordered:
            grouped.setdefault(model.name, []).append(model)
        return cls(ordered, {name: listed(versions, order) for name, versions in grouped.items()})


@dataclass
class Registry:
    """The served models, the plugins that failed, and the health checks of this process."""

    snapshot: Snapshot = field(default_factory=lambda: Snapshot.of(()))
    plugin_failures: list[PluginFailure] = field(default_factory=list)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    trained_order: TrainedOrder = field(default_factory=TrainedOrder)
    #: Held while a new snapshot is built from the current one: the event loop swaps models while the jobs'
    #: thread orders the trained versions, and neither change may be lost.
    changing: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def models(self) -> tuple[ServingModel, ...]:
        return self.snapshot.models

    def replace(self, model: ServingModel) -> ServingModel | None:
        """Serve ``model`` in place of the one of its name and version (added if there is none); returns the one
        replaced. Calls already holding the old one finish on it."""
        with self.changing:
            current = self.snapshot
            old = next((m for m in current.models if (m.name, m.version) == (model.name, model.version)), None)
            models = [model if m is old else m for m in current.models] if old else [*current.models, model]
            self.snapshot = Snapshot.of(models, self.trained_order)
        return old

    def remove_trained(self, name: str, version: str) -> ServingModel | None:
        """Stop serving a trained version (never an installed one); the one removed, if there was one. Calls
        already holding it finish on it."""
        with self.changing:
            current = self.snapshot
            found = next((m for m in current.by_name.get(name, ()) if m.version == version), None)
            if found is None or trained_by(found) is None:
                return None
            self.snapshot = Snapshot.of((m for m in current.models if m is not found), self.trained_order)
        return found

    def order_trained(self, order: TrainedOrder) -> None:
        """Order the trained versions (and pick the defaults) as ``order`` says, from now on."""
        with self.changing:
            if order == self.trained_order:
                return
            self.trained_order = order
            self.snapshot = Snapshot.of(self.snapshot.models, order)

    @property
    def failures(self) -> list[str]:
        """Why the server is not ready, one line per failed plugin or model (a model not loaded is no failure)."""
        lines = [f"plugin {f.source.describe()}: {f.error}" for f in self.plugin_failures]
        lines += [f"model {m.name} version {m.version}: {m.reason or m.state}" for m in self.models if m.failed]
        return lines

    def names(self) -> list[str]:
        return list(self.snapshot.by_name)

    def versions_of(self, name: str) -> tuple[ServingModel, ...]:
        """The versions of one model, its default first (``listed``)."""
        return self.snapshot.by_name.get(name, ())

    def defaults(self) -> list[ServingModel]:
        """The default version of every model, in discovery order."""
        return [versions[0] for versions in self.snapshot.by_name.values()]

    def get(self, name: str, version: str | None = None) -> ServingModel:
        """The model of a name and version (its default version when None), or NotFound."""
        versions = self.snapshot.by_name.get(name)
        if not versions:
            raise UnknownModel.named(name, self.snapshot.by_name)
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
