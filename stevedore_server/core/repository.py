"""The model repository: models listed, loaded and unloaded while the server runs (the Open Inference
Protocol's model repository extension), for models installed as wheels.

- ``index`` re-reads the installed distributions' entry points: every model they
  provide, with its state (READY, or UNAVAILABLE with the reason: not loaded, or
  what failed). What the environments of models with a ``python`` of their own
  provide (an interpreter started for each) is asked once and kept: only a load
  asks them again.
- ``load`` re-reads them all, those environments too, so a plugin wheel
  ``pip install``ed next to the running server (or in a model's environment) is
  found, and an editable one (``pip install -e``: its ``.pth`` file is read,
  ``site_packages.SitePackages``); a plugin that fails to import is a 400 with its
  error, listed in ``/healthz``; it loads and self-tests every version of the model,
  then swaps each into the registry (calls in flight finish on the old one). A
  load that fails leaves what is serving untouched. A distribution upgraded
  while its modules are imported is refused: Python cannot re-import a package
  in place safely (``importlib.reload`` leaves old classes and objects behind),
  so serving the new version takes a restart.
- ``unload`` puts a not-loaded record in the model's place, lets its calls in
  flight finish, closes its runtime and lets its memory go (``release_memory``,
  the serving process's: its frozen heap is thawed for one full collection).

Discovery, load and unload run under the repository's lock, one at a time: a
burst of index calls cannot start interpreters, or threads, by the hundred.
Index calls that wait for the lock together share one discovery, begun after
each of them came (so an index is never older than its request): a burst runs
one or two, not one each. With ``--workers N`` every worker converges on the
same models before a load or unload is answered (``convergence``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import pluggy
from anyio import to_thread

from stevedore_server.base.errors import BadRequest, InferenceTimeout, StevedoreError, UnknownModel, unknown_name
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.plugins.discovery import Candidate, failed_plugins_of
from stevedore_server.plugins.hooks import Hooks
from stevedore_server.plugins.loading import State, not_loaded
from stevedore_server.plugins.site_packages import SitePackages
from stevedore_server.predictor import Predictor
from stevedore_server.processes import isolation

from . import serving, startup
from .convergence import LOADED, UNLOADED, Desired, SharedState
from .lazy_loading import LazyLoader
from .served_models import TRAINED_BY_JOB
from .server import ModelServer
from .serving import ServingModel
from .traffic_convergence import SharedSplits

logger = logging.getLogger("stevedore.repository")

#: Seconds a replaced or unloaded model's calls in flight get to finish before its runtime is closed anyway.
RETIRE_TIMEOUT = 300.0
#: Seconds between a worker's looks at the desired state, and the longest wait for every worker to follow.
POLL_INTERVAL = 0.1
CONVERGE_TIMEOUT = 120.0


class ModelRepository(Protocol):
    """What the repository routes and RPCs, and the jobs, call: ``Repository`` here; the Ray Serve ingress has
    its own."""

    #: With ``--workers N``: the workers' shared files; None where there are none.
    shared: SharedState | None
    #: Whether the versions trainings make are served here (``serve_trained``); not where other processes hold
    #: the models (Ray Serve's replicas).
    serves_trained: bool

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    async def serve_trained(self, predictor: Predictor, base: ServingModel, job_id: str) -> None: ...

    async def unserve_trained(self, name: str, version: str) -> None: ...


class Repository:
    """Lists, loads and unloads the models of ``server``; ``manager`` replaces the entry points (tests)."""

    serves_trained = True

    def __init__(
        self,
        server: ModelServer,
        manager: pluggy.PluginManager | None = None,
        shared: SharedState | None = None,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.manager = manager
        #: Held by each discovery, load and unload: one at a time.
        self.lock = asyncio.Lock()
        #: What the environments of models with a ``python`` of their own provide, as last asked (None: not yet).
        self.environments: startup.Environments | None = None
        #: The models (name, version) the last index's discovery found (None: none found yet, or it failed), and
        #: how many such discoveries have begun.
        self.installed: list[tuple[str, str]] | None = None
        self.discoveries = 0
        self.retiring: set[asyncio.Task[None]] = set()
        #: The ``.pth`` files read: an editable install since startup adds one, read before the next discovery.
        self.site_packages = SitePackages()
        #: With workers: the desired state all of them follow, what this one has applied, and its poller.
        self.shared = shared
        self.generation = 0
        self.applied: dict[str, int] = {}
        self.poller: asyncio.Task[None] | None = None
        #: With workers: the traffic splits changed while serving, which every worker follows too.
        self.splits = SharedSplits(server.traffic, shared, server.settings.workers) if shared is not None else None
        #: Loads lazy models on their first request, within the memory budget, which the loads here keep too; and
        #: frees a dropped model's memory once its last call has finished (``release_memory``: a frozen heap is the
        #: serving process's to thaw).
        self.lazy = LazyLoader(server, self.replace, self.fresh_predictor, release_memory)
        server.inference.loader = self.lazy

    async def start(self) -> None:
        """Keep the models loaded at startup within the memory budget; with workers: apply the desired state
        before serving, then follow it."""
        async with self.lazy.lock:
            self.lazy.count_loaded()
            await self.lazy.make_room(0)
        if self.shared is None:
            return
        await self.follow()
        self.poller = asyncio.create_task(self.poll())
        if self.splits is not None:
            await self.splits.start()

    async def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every model the installed plugins provide, and every model served, with its state."""
        installed = await self.installed_models()
        served = {(m.name, m.version): m for m in self.server.registry.models}
        entries = [entry(served[key]) for key in served]
        entries += [
            {"name": name, "version": version, "state": "UNAVAILABLE", "reason": "not loaded"}
            for name, version in installed
            if (name, version) not in served
        ]
        return [e for e in entries if e["state"] == "READY"] if ready_only else entries

    async def installed_models(self) -> list[tuple[str, str]]:
        """The installed models (name, version), from a discovery begun after this call came: the calls waiting
        for the lock together share the next one. Only names are kept: a predictor kept here could be the one a
        later load serves, and would hold its memory after an unload."""
        came = self.discoveries
        async with self.lock:
            installed = self.installed
            if installed is None or self.discoveries == came:  # none begun since this call came, or it failed
                self.discoveries += 1
                self.installed = None
                candidates, _ = await to_thread.run_sync(self.discover)
                installed = self.installed = [(c.predictor.name, c.predictor.version) for c in candidates]
            return installed

    async def load(self, name: str) -> None:
        """Load (or reload) every installed version of ``name``; BadRequest with the reason if one fails."""
        await self.change(name, LOADED)

    async def unload(self, name: str) -> None:
        """Unload every version of ``name``: not ready at once, dropped once its calls in flight have finished."""
        await self.change(name, UNLOADED)

    async def change(self, name: str, state: str) -> None:
        """Apply a load or unload here and, with workers, record it and wait until every worker has too."""
        async with self.lock:
            if self.shared is None:
                await self.apply(name, state)
                return
            generation = await self.record(self.shared, name, state)
        await self.converged(self.shared, name, generation)

    async def apply(self, name: str, state: str) -> None:
        await (self.load_here(name) if state == LOADED else self.unload_here(name))

    async def record(self, shared: SharedState, name: str, state: str) -> int:
        """Under the workers' lock: catch up with the others' changes, apply this one, record it."""
        lock = shared.locked()
        await to_thread.run_sync(lock.__enter__)
        try:
            desired = shared.read()
            await self.catch_up(desired)
            await self.apply(name, state)  # a failure records nothing: the others keep what they serve
            generation = desired.generation + 1
            desired.generation, desired.models[name] = generation, (state, generation)
            shared.write(desired)
            self.generation = self.applied[name] = generation
            shared.acknowledge(generation)
            return generation
        finally:
            lock.__exit__(None, None, None)

    async def converged(self, shared: SharedState, name: str, generation: int) -> None:
        """Wait until every live worker has applied ``generation``."""
        workers = self.server.settings.workers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONVERGE_TIMEOUT
        while sum(acknowledged >= generation for acknowledged in shared.acknowledged()) < workers:
            if loop.time() > deadline:
                late = f"model {name!r} changed on this worker, but not every worker followed"
                raise InferenceTimeout(f"{late} within {CONVERGE_TIMEOUT:g} s")
            await asyncio.sleep(POLL_INTERVAL / 2)

    async def poll(self) -> None:
        """Follow the desired state the other workers record."""
        if self.shared is None:
            return
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if self.shared.read().generation > self.generation:
                    await self.follow()
            except Exception as error:  # a bad look at the files must not end the following: the next one may do
                logger.error("could not follow the other workers' models", exc_info=error)

    async def follow(self) -> None:
        """Apply what changed in the desired state, then acknowledge it."""
        if self.shared is None:
            return
        async with self.lock:
            desired = self.shared.read()
            await self.catch_up(desired)
            self.generation = max(self.generation, desired.generation)
            self.shared.acknowledge(self.generation)

    async def catch_up(self, desired: Desired) -> None:
        """Apply each model's wanted state changed since this worker last applied it (a failure is logged: the
        worker keeps what it served)."""
        for name, state in desired.changed_since(self.applied).items():
            try:
                await self.apply(name, state)
            except StevedoreError as error:
                logger.error("model %s: could not follow the other workers (%s): %s", name, state, error)
            self.applied[name] = desired.models[name][1]

    async def load_here(self, name: str) -> None:
        """Load every installed version of ``name`` in this process."""
        candidates, hooks = await to_thread.run_sync(self.candidates, name)
        settings = self.server.settings
        async with self.lazy.lock:  # within the memory budget, measured one load at a time
            await self.lazy.make_room(sum(self.lazy.estimate((name, c.predictor.version)) for c in candidates))
            loaded = await to_thread.run_sync(lambda: [isolation.load_candidate(c, settings) for c in candidates])
            failed = [f"version {m.version}: {m.reason}" for m in loaded if not m.ready]
            if failed:
                for record in loaded:  # what the versions that did load hold is let go
                    await to_thread.run_sync(record.predictor.unload)
                raise BadRequest(f"failed to load model {name!r}, which keeps serving as it was: " + "; ".join(failed))
            for record in loaded:
                metadata, _ = hooks.catalogue_metadata(record.predictor, self.server)
                described = serving.describe(record, metadata)
                self.swap(await serving.start(described, self.server.settings, self.server.metrics))
                self.lazy.loaded_here(record)
            await self.lazy.make_room(0, keep=None, loading={(name, m.version) for m in loaded})
        logger.info("model %s loaded: versions %s", name, ", ".join(m.version for m in loaded))

    async def unload_here(self, name: str) -> None:
        """Put a not-loaded record in the place of every version of ``name`` in this process."""
        served = self.server.registry.versions_of(name)
        if not served:
            raise UnknownModel.named(name, self.server.registry.names())
        fresh = {(c.predictor.name, c.predictor.version): c for c in (await to_thread.run_sync(self.discover))[0]}
        async with self.lazy.lock:  # a lazy load of it in progress ends first, and this unload stands
            for model in self.server.registry.versions_of(name):
                if model.state is State.UNLOADED:
                    continue
                # A fresh predictor from the entry point, so that nothing keeps the loaded one's memory.
                candidate = fresh.get((model.name, model.version))
                predictor = candidate.predictor if candidate else model.predictor
                self.swap(serving.describe(not_loaded(predictor, model.source), model.metadata))
            self.lazy.count_loaded()
        logger.info("model %s unloaded", name)

    async def serve_trained(self, predictor: Predictor, base: ServingModel, job_id: str) -> None:
        """Serve the new version a training made, once loaded and self-tested, beside the model it came from."""
        loaded = await to_thread.run_sync(isolation.load_measured, predictor, base.source, self.server.settings)
        if not loaded.ready:
            await to_thread.run_sync(predictor.unload)  # what its load holds (worker processes) is not served
            raise BadRequest(f"the new version {predictor.version} failed: {loaded.reason}")
        described = serving.describe(loaded, {**base.metadata, TRAINED_BY_JOB: job_id})
        self.swap(await serving.start(described, self.server.settings, self.server.metrics))
        self.lazy.loaded_here(loaded)
        logger.info("model %s version %s, trained by job %s, served", predictor.name, predictor.version, job_id)

    async def unserve_trained(self, name: str, version: str) -> None:
        """Stop serving a trained version (never an installed one): dropped at once, its runtime closed once its
        calls in flight have finished."""
        removed = self.server.registry.remove_trained(name, version)
        if removed is None:
            return
        self.server.metrics.describe_model(name, version, False, None)
        self.lazy.count_loaded()
        self.retire_later(removed)
        logger.info("model %s version %s, trained by job %s, no longer served", name, version,
                    removed.metadata.get(TRAINED_BY_JOB))  # fmt: skip

    def close(self) -> None:
        """At shutdown: stop following the other workers, and waiting for replaced models (their runtimes close)."""
        if self.poller is not None:
            self.poller.cancel()
        if self.splits is not None:
            self.splits.close()
        self.server.traffic.close()
        self.lazy.close()
        for task in self.retiring:
            task.cancel()

    def discover(self, reread: bool = False) -> tuple[list[Candidate], Hooks]:
        candidates, _, hooks = self.find(reread)
        return candidates, hooks

    def find(self, reread: bool = False) -> tuple[list[Candidate], list[PluginFailure], Hooks]:
        """The installed predictors as the entry points list them now (a wheel installed since startup too, or an
        editable install: its ``.pth`` file is read), and the plugins that failed; those of other environments as
        they said last, unless ``reread`` (a load) asks them again. Under the lock."""
        self.site_packages.refresh()
        if reread or self.environments is None:
            self.environments = isolation.isolated_candidates(self.server.settings)
        return startup.find(self.server.settings, self.manager, self.environments)

    def candidates(self, name: str) -> tuple[list[Candidate], Hooks]:
        """The installed versions of ``name``: if none, UnknownModel, or BadRequest when the plugin of its name
        failed (``not_provided``); BadRequest if its distribution was upgraded. The plugins that failed are listed
        in ``/healthz``."""
        found, failures, hooks = self.find(reread=True)
        self.record_failures(found, failures)
        mine = [c for c in found if c.predictor.name == name]
        if not mine:
            raise not_provided(name, {c.predictor.name for c in found}, failures)
        served = {m.source.distribution: m.source.distribution_version for m in self.server.registry.models}
        for candidate in mine:
            source = candidate.source
            if source.distribution in served and served[source.distribution] != source.distribution_version:
                raise BadRequest(
                    f"{source.distribution} was upgraded from {served[source.distribution]} to "
                    f"{source.distribution_version} while serving; its modules are imported already and cannot be "
                    "re-imported in place: restart the server to serve the new version"
                )
        return mine, hooks

    def record_failures(self, found: list[Candidate], failures: list[PluginFailure]) -> None:
        """What a load's discovery saw, in ``/healthz``'s failed plugins: the plugins that failed added, those that
        failed before and now give their predictors taken out."""
        working = {failure_key(candidate.source) for candidate in found}
        kept = [f for f in self.server.registry.plugin_failures if failure_key(f.source) not in working]
        listed = {failure_key(f.source) for f in kept}
        added = [replace(f, found_by_load=True) for f in failures if failure_key(f.source) not in listed]
        self.server.registry.plugin_failures = kept + added

    def swap(self, model: ServingModel) -> None:
        """Serve ``model`` in place of the one of its name and version, which retires once its calls finish."""
        old = self.replace(model)
        if old is not None:
            self.retire_later(old)

    def replace(self, model: ServingModel) -> ServingModel | None:
        """Serve ``model`` in place of the one of its name and version; the one replaced, its runtime left open."""
        old = self.server.registry.replace(model)
        source = model.source
        plugin = None
        if source.distribution and source.distribution_version:
            plugin = (source.distribution, source.distribution_version)
        self.server.metrics.describe_model(model.name, model.version, model.ready, plugin)
        return old

    def fresh_predictor(self, name: str, version: str) -> Predictor | None:
        """A predictor of ``name`` and ``version`` fresh from its entry point, not loaded (None: none provides it
        now); blocking. What the environments of other interpreters said is taken as last asked."""
        candidates, _, _ = startup.find(self.server.settings, self.manager, self.environments)
        return next((c.predictor for c in candidates if (c.predictor.name, c.predictor.version) == (name, version)),
                    None)  # fmt: skip

    def retire_later(self, model: ServingModel) -> None:
        """Close a dropped model's runtime once its calls in flight have finished."""
        if model.runtime is not None:
            task = asyncio.create_task(self.retire(model))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    async def retire(self, model: ServingModel) -> None:
        await serving.retire(model, RETIRE_TIMEOUT)
        del model
        self.lazy.release_frozen()


def not_provided(name: str, names: set[str], failures: list[PluginFailure]) -> StevedoreError:
    """Why no plugin provides model ``name``: BadRequest with the import error when the plugin whose entry point
    bears its name failed; else UnknownModel suggesting the closest of ``names``, and naming the plugins that
    failed (one may provide it under another entry point's name)."""
    mine = failed_plugins_of(name, failures)
    if mine:
        # The server's environment is the operator's to know, not every client's: the log tells it.
        logger.warning("cannot load model %r: %s (the server's environment: %s)", name, "; ".join(mine), sys.prefix)
        return BadRequest(
            f"cannot load model {name!r}: {'; '.join(mine)}. Fix the plugin or install what it needs in the "
            "server's environment, then load it again"
        )
    hint = unknown_name(name, names)
    others = failed_plugins_of(None, failures)
    if others:
        hint += f"; a plugin that failed may provide it: {'; '.join(others)}"
    return UnknownModel(f"no installed plugin provides a model named {name!r}", hint)


def failure_key(source: PluginSource) -> tuple[str, str, str | None]:
    """A plugin as its failures are told apart: by entry point, not by version (an upgrade fixes its plugin)."""
    return source.entry_point, source.group, source.distribution


def entry(model: ServingModel) -> dict[str, Any]:
    """A served model's line of the index."""
    state = "READY" if model.ready else "UNAVAILABLE"
    return {"name": model.name, "version": model.version, "state": state, "reason": model.reason or ""}
