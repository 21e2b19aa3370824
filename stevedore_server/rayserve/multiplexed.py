"""The multiplexed deployment: the models that load lazily (``settings.loads_lazily``) get no deployment of their
own; one deployment, ``stevedore-multiplexed``, serves them all, each replica holding at most
``max_models_per_replica`` of them at once (Serve's model multiplexing).

The ingress calls it with the model's id, ``name:version``, as the request's
multiplexed model id (``handle.options(multiplexed_model_id=...)``): Serve
routes the call to a replica that holds that model if one does, else to one
that loads it, unloading its least recently used model first when it holds
``max_models_per_replica`` already. A model held here is a ``ModelReplica``
made inside this replica: loaded and self-tested, served by its own runtime,
with the same replies as a model's own deployment; unloading it stops its
runtime (and its worker processes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from ray import serve
from ray.serve.handle import DeploymentHandle

from stevedore_server.base.errors import NotReady, ReplicaLoadFailed
from stevedore_server.base.health import failing, run_checks
from stevedore_server.base.settings import Settings
from stevedore_server.core import serving
from stevedore_server.core.lazy_loading import LazyLoader
from stevedore_server.core.server import ModelServer
from stevedore_server.core.serving import ServingModel
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.loading import LoadedModel, State, lazy

from .config import MULTIPLEXED, deployment_name, settings_from_args
from .forwarding import record, runtime_starter
from .metrics_export import export_metrics, exports_running
from .replica import LoadReport, ModelReplica, Reply, configure_logging, served_by

logger = logging.getLogger("stevedore.rayserve")


def model_id(name: str, version: str) -> str:
    """A model's multiplexed model id: its deployment's name had it one, ``iris:1.0``."""
    return deployment_name(name, version)


async def load_held(settings: dict[str, Any], name: str, version: str) -> ModelReplica:
    """A ``ModelReplica`` of ``name`` ``version`` made in this replica, started as in a model's own deployment."""
    held = ModelReplica.__new__(ModelReplica)
    await held.start(settings, name, version)  # no export of its own: the multiplexed replica's covers it
    return held


def loader(
    settings: dict[str, Any], replica: str, held: dict[str, ModelReplica], loads: list[int]
) -> Callable[[str], Awaitable[Any]]:
    """The function Serve's multiplexing calls to load a model by its id (into ``held``, by id; ``loads`` counts
    them)."""

    async def load(model: str) -> Held:
        loads[0] += 1
        name, _, version = model.partition(":")
        logger.info("replica %s: loading model %s version %s", replica, name, version)
        loaded = await load_held(settings, name, version)
        report = loaded.report()
        if report.state != State.READY:  # not held: the multiplexing keeps no failure, the next call tries again
            loaded.__del__()
            raise ReplicaLoadFailed(name, version, report.reason or report.state)
        held[model] = loaded
        logger.info("replica %s: model %s loaded; holding %d", replica, model, len(held))
        return Held(loaded, held, model, replica)

    return load


class Held:
    """A model as the multiplexing holds it: Serve calls ``__del__`` when it unloads it (the least recently used,
    to make room), which stops its runtime and its worker processes, once."""

    def __init__(self, model: ModelReplica, held: dict[str, ModelReplica], key: str, replica: str) -> None:
        self.model = model
        self.held = held
        self.key = key
        self.replica = replica
        self.unloaded = False

    def __del__(self) -> None:
        if self.unloaded:
            return
        self.unloaded = True
        self.held.pop(self.key, None)
        self.model.__del__()
        logger.info("replica %s: model %s unloaded; holding %d", self.replica, self.key, len(self.held))


class MultiplexedReplica:
    """One replica of the multiplexed deployment (``app.build`` makes it a Serve deployment)."""

    async def __init__(self, settings: dict[str, Any]) -> None:  # type: ignore[misc]
        own = settings_from_args(settings)
        configure_logging(own)
        self.served_by = served_by()
        #: The models loaded here, by id: what Serve's multiplexing holds (and ``holding`` tells).
        self.held: dict[str, ModelReplica] = {}
        #: The loads this replica has made (the first request of a model not held: never one it holds).
        self.loads = [0]
        load = loader(settings, self.served_by, self.held, self.loads)
        # Decorated here: the bound is a setting, which the class's decorator could not read.
        self.model = serve.multiplexed(max_num_models_per_replica=own.max_models_per_replica)(load)
        #: One export of the held models' metrics (``metrics_export``), whichever they are now.
        self.exporting = export_metrics(self.held_registries, self.served_by)

    def held_registries(self) -> list[CollectorRegistry]:
        return [held.server.metrics.registry for held in list(self.held.values())]  # may change on another thread

    async def held_model(self) -> ModelReplica | ReplicaLoadFailed | Reply:
        """The model of the current request (its multiplexed id), loaded if it is not held; or why it is not."""
        model = serve.get_multiplexed_model_id()
        try:
            found: Held = await self.model(model)
        except ReplicaLoadFailed as failure:
            return failure
        except Exception as error:  # no such model here (``load_one``), or Serve's own failure; logged by it
            return Reply(self.served_by, error=NotReady(f"model {model!r} could not be loaded here: {error}"))
        return found.model

    async def report(self) -> LoadReport:
        """What loading the current request's model found (loading it here if it is not held): a model that
        failed is reported failed, and not held."""
        held = await self.held_model()
        if isinstance(held, ModelReplica):
            return held.report()
        if isinstance(held, ReplicaLoadFailed):
            reason = held.reason
        else:
            reason = held.error.message if held.error is not None else "not loaded"
        return LoadReport(str(State.FAILED), reason, None, None, False, self.served_by)

    async def call(self, action: str, payload: Any, rows: int | None, carrier: dict[str, str] | None = None) -> Reply:
        """``ModelReplica.call`` on the current request's model."""
        held = await self.held_model()
        if isinstance(held, ReplicaLoadFailed):
            return Reply(self.served_by, error=NotReady(str(held)))
        if isinstance(held, Reply):
            return held
        return await held.call(action, payload, rows, carrier)

    async def holding(self) -> dict[str, Any]:
        """This replica, the ids of the models it holds now, how many loads it has made, and how many exports of
        metrics run in it."""
        models = sorted(self.held.copy())  # a model may be unloading on another thread
        return {"replica": self.served_by, "models": models, "loads": self.loads[0], "exports": exports_running()}

    def check_health(self) -> None:
        """Serve's health check: the plugins' checks of every model held here pass."""
        problems = [problem for held in list(self.held.values()) for problem in failing(run_checks(held.checks))]
        if problems:
            raise RuntimeError("; ".join(problems))

    def __del__(self) -> None:
        exporting = getattr(self, "exporting", None)
        if exporting is not None:
            exporting.stop()


# -- the ingress's side ---------------------------------------------------------------------------------------------


class MultiplexedLoader(LazyLoader):
    """The ingress's loader of the lazy models: a lazy model's first request asks the multiplexed deployment for
    it (a replica loads it, which the request needs anyway) and what loading found; its record here is then ready,
    each call forwarded with its model id. Which replicas hold it from then on is Serve's multiplexing: a model a
    replica unloaded is loaded again by the next call routed there. No memory budget here: the replicas hold the
    models, each at most ``max_models_per_replica``."""

    def __init__(self, server: ModelServer, handle: DeploymentHandle) -> None:
        super().__init__(server, server.registry.replace, no_fresh)
        self.budget = None
        self.handle = handle

    async def load(self, model: ServingModel) -> None:
        """Ask a replica for ``model`` and serve it here as that replica found it. Not one at a time (the
        replicas load, not this process), and never evicted here."""
        current = self.current((model.name, model.version))
        if current is None or current.state is not State.LAZY:
            return
        key = model_id(model.name, model.version)
        handle = self.handle.options(multiplexed_model_id=key)
        started = time.perf_counter()
        report: LoadReport = await handle.report.remote()
        seconds = time.perf_counter() - started
        loaded = record(current.predictor, current.source, report)
        if not loaded.ready:  # nothing of it was loaded here
            raise self.record_failure(current, loaded.reason or "", seconds)
        self.failures.pop((model.name, model.version), None)
        described = serving.describe(loaded, current.metadata)
        start = runtime_starter({key: handle}, model_id)
        self.swap(await start(described, self.server.settings, self.server.metrics))
        self.loaded(loaded, seconds)


def no_fresh(name: str, version: str) -> None:
    return None


def lazy_record(settings: Settings, candidate: Candidate, report: LoadReport | None) -> LoadedModel:
    """The ingress's record of a model: a lazy one not loaded yet (the multiplexed deployment serves it), else as
    its deployment's replica reported it (``forwarding.record``)."""
    if settings.loads_lazily(candidate.predictor.name):
        return lazy(candidate.predictor, candidate.source)
    return record(candidate.predictor, candidate.source, report)


def serve_lazily(server: ModelServer, handles: Mapping[str, DeploymentHandle]) -> None:
    """The lazy models of the ingress's ``server`` loaded by the multiplexed deployment, if there is one."""
    handle = handles.get(MULTIPLEXED)
    if handle is not None:
        server.inference.loader = MultiplexedLoader(server, handle)
