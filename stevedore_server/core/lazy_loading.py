"""Models loaded on their first request, and the memory budget of the loaded ones.

A lazy model (``model_load = "lazy"``, or ``[models.NAME] load = "lazy"``) is
discovered at startup and listed as ``State.LAZY``, "not loaded yet", its
predictor never loaded. Its first request calls ``LazyLoader.ensure``, which
loads and self-tests it and swaps it into the registry:

- loads run one at a time (a model's memory is measured around its load:
  ``isolation.load_candidate``); the first requests of one model share its load,
  each waiting at most the model's time-out (the load goes on for the next);
- a load that fails answers every waiter with the same error, and so does every
  request until a back-off has passed (``RETRY_BACKOFF``, doubling up to
  ``MAX_RETRY_BACKOFF``); only then is it tried again;
- the predictor of a lazy record is never loaded itself: each load loads a copy,
  so the memory of an unloaded model goes with its copy.

With ``model_memory_budget``, every loaded model counts (those loaded at
startup and through the repository too), by the bytes measured after its
load. Before a load, the least recently used models neither pinned
(``[models.NAME] pin = true``) nor trained by a job are unloaded, evicted, until the loaded ones and
the new one fit (its size as last measured, else the largest measured so far);
after it, its measured size decides again. An evicted model is lazy again: its
next request loads it. Its calls in flight finish first.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from stevedore_server.base.errors import InferenceTimeout, LoadFailed
from stevedore_server.base.memory import return_freed_memory
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.loading import LoadedModel, State, lazy
from stevedore_server.predictor import Predictor
from stevedore_server.processes import isolation

from . import serving
from .served_models import trained_by
from .server import ModelServer
from .serving import ServingModel

logger = logging.getLogger("stevedore.lazy")

#: Seconds a model that failed to load is not tried again (doubling with each failure in a row, up to the most).
RETRY_BACKOFF = 2.0
MAX_RETRY_BACKOFF = 60.0

Key = tuple[str, str]


@dataclass
class Failure:
    error: LoadFailed
    retry_at: float
    #: Failures in a row: the back-off doubles with each.
    count: int


#: Puts a model in the registry in place of the one of its name and version (``Repository.replace``); returns the
#: old one, whose runtime it leaves open.
Swap = Callable[[ServingModel], ServingModel | None]
#: Lets the memory of a dropped model go (the serving process's: a frozen heap thawed for one collection).
Release = Callable[[], None] | None
#: A fresh, not loaded predictor of a name and version (a discovery), for a model that was never lazy.
Fresh = Callable[[str, str], Predictor | None]


class LazyLoader:
    """Loads lazy models on their first request and keeps the loaded ones within the memory budget."""

    def __init__(self, server: ModelServer, swap: Swap, fresh: Fresh, release_memory: Release = None) -> None:
        self.server = server
        self.swap = swap
        self.fresh = fresh
        self.release_memory = release_memory
        self.budget = server.settings.memory_budget
        #: One load (or eviction) at a time: a model's memory is its process's growth while it loads.
        self.lock = asyncio.Lock()
        self.loading: dict[Key, asyncio.Task[None]] = {}
        self.failures: dict[Key, Failure] = {}
        #: Each model's size when last loaded (kept after its eviction: its next load's estimate).
        self.sizes: dict[Key, int] = {}
        self.last_used: dict[Key, float] = {}
        #: The not loaded predictor of each model that was lazy: what its next load copies.
        self.pristine: dict[Key, Predictor] = {}
        #: Thaws of the frozen heap so far (``release_frozen``), and how many there had been when each model was
        #: loaded here: one loaded since the last is not frozen.
        self.thaws = 0
        self.thawed_at: dict[Key, int] = {}

    def close(self) -> None:
        """At shutdown: stop the loads in progress (their waiters get cancelled)."""
        for task in self.loading.values():
            task.cancel()

    def used(self, model: ServingModel) -> None:
        """A request is served by ``model``: it is the most recently used."""
        self.last_used[(model.name, model.version)] = time.monotonic()

    async def ensure(self, model: ServingModel, deadline: float | None = None) -> None:
        """Load the lazy ``model`` unless it is loading already; wait for it at most its model's time-out, or until
        ``deadline`` (``time.monotonic()``: the request's own, ``deadlines``) if sooner."""
        key = (model.name, model.version)
        failure = self.failures.get(key)
        if failure is not None and time.monotonic() < failure.retry_at:
            raise failure.error.again(failure.retry_at - time.monotonic())
        task = self.loading.get(key)
        if task is None:
            # A context of its own: the load is no request's (its log lines and spans carry none's id).
            task = asyncio.create_task(self.load(model), context=contextvars.Context())
            self.loading[key] = task
            task.add_done_callback(lambda _: self.loading.pop(key, None))
            task.add_done_callback(retrieved)
        timeout = self.server.settings.limits_for(model.predictor).timeout
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise InferenceTimeout(
                f"model {model.name!r} version {model.version!r} did not load within {timeout:g} s (its time-out, or "
                "the request's deadline); it goes on loading"
            ) from None
        except LoadFailed as error:  # each waiter its own: a shared instance would gather every raiser's frames
            raise error.again() from None

    async def load(self, model: ServingModel) -> None:
        key = (model.name, model.version)
        async with self.lock:
            current = self.current(key)
            if current is None or current.state is not State.LAZY:
                return  # loaded, unloaded or removed meanwhile
            self.pristine.setdefault(key, current.predictor)
            started = time.perf_counter()
            try:
                loaded = await self.load_copy(current)
            except Exception as error:  # a bug, or a discovery that failed: the back-off holds all the same
                logger.error("model %s version %s: loading failed", *key, exc_info=error)
                seconds = time.perf_counter() - started
                raise self.record_failure(current, f"{type(error).__name__}: {error}", seconds) from None
            seconds = time.perf_counter() - started
            if not loaded.ready:
                await to_thread.run_sync(loaded.predictor.unload)  # what its copy holds is let go
                raise self.record_failure(current, loaded.reason or "", seconds)
            if self.current(key) is not current:  # unloaded through the repository meanwhile: that stands
                await to_thread.run_sync(loaded.predictor.unload)
                return
            self.failures.pop(key, None)
            self.thawed_at[key] = self.thaws
            described = serving.describe(loaded, current.metadata)
            self.swap(await serving.start(described, self.server.settings, self.server.metrics))
            self.loaded(loaded, seconds)
            await self.make_room(0, keep=key)

    async def load_copy(self, current: ServingModel) -> LoadedModel:
        """A copy of the model's pristine predictor loaded and self-tested, within the budget."""
        key = (current.name, current.version)
        await self.make_room(self.estimate(key), keep=key)
        candidate = Candidate(copied(self.pristine[key]), current.source)
        return await to_thread.run_sync(isolation.load_candidate, candidate, self.server.settings)

    def loaded(self, loaded: LoadedModel, seconds: float) -> None:
        key = (loaded.name, loaded.version)
        self.loaded_here(loaded)
        metrics = self.server.metrics
        metrics.model_loads.labels(*key, "loaded").inc()
        metrics.model_load_seconds.labels(*key).observe(seconds)
        logger.info("model %s version %s loaded on its first request in %.2f s, holding %s", *key, seconds,
                    described_size(loaded.memory))  # fmt: skip

    def record_failure(self, current: ServingModel, reason: str, seconds: float) -> LoadFailed:
        """Record a failed load of ``current`` (its back-off begins, its record says why); its error."""
        key = (current.name, current.version)
        previous = self.failures.get(key)
        count = previous.count + 1 if previous else 1
        backoff = min(RETRY_BACKOFF * 2 ** (count - 1), MAX_RETRY_BACKOFF)
        error = LoadFailed(
            f"model {key[0]!r} version {key[1]!r} failed to load: {reason}; tried again after {backoff:g} s", backoff
        )
        self.failures[key] = Failure(error, time.monotonic() + backoff, count)
        self.swap(serving.describe(lazy(current.predictor, current.source, error.message), current.metadata))
        self.server.metrics.model_loads.labels(*key, "failed").inc()
        self.server.metrics.model_load_seconds.labels(*key).observe(seconds)
        logger.error("model %s version %s failed to load on its first request (%.2f s): %s", *key, seconds, reason)
        return error

    def loaded_here(self, loaded: LoadedModel) -> None:
        """``loaded`` serves now (a lazy load, or the repository's): its size is known, it is the most recent."""
        key = (loaded.name, loaded.version)
        if loaded.memory is not None:
            self.sizes[key] = loaded.memory
        self.last_used[key] = time.monotonic()
        self.count_loaded()

    def current(self, key: Key) -> ServingModel | None:
        return next((m for m in self.server.registry.versions_of(key[0]) if m.version == key[1]), None)

    def estimate(self, key: Key) -> int:
        """What a model will hold: its size when last loaded, else the largest any model held (0: none known)."""
        return self.sizes.get(key, max(self.sizes.values(), default=0))

    def held(self) -> int:
        """Bytes the loaded models hold, as measured after their loads."""
        return sum(size_of(model) for model in self.server.registry.models if model.ready)

    async def make_room(self, needed: int, keep: Key | None = None, loading: set[Key] | None = None) -> None:
        """Evict the least recently used unpinned models until ``needed`` more bytes fit in the budget (never
        ``keep``, the model loading, nor those of ``loading``). Under the lock."""
        if self.budget is None:
            return
        kept = (loading or set()) | ({keep} if keep else set())
        evicted: list[Key] = []
        while self.held() + needed > self.budget:
            victim = self.least_recently_used(kept)
            if victim is None:
                logger.warning("the loaded models hold %s, over the memory budget of %s, and none can be unloaded "
                               "(pinned, trained by a job, or the one loading)", described_size(self.held() + needed),
                               described_size(self.budget))  # fmt: skip
                break
            evicted.append((victim.name, victim.version))
            await self.evict(victim)
            del victim
        if evicted:
            await self.let_go(evicted)

    def least_recently_used(self, kept: set[Key]) -> ServingModel | None:
        settings = self.server.settings
        evictable = [
            model
            for model in self.server.registry.models
            if model.ready
            and (model.name, model.version) not in kept
            and settings.for_model(model.name).pin is not True
            and trained_by(model) is None  # a trained version comes from no entry point: it could not load again
        ]
        return min(evictable, key=lambda m: self.last_used.get((m.name, m.version), 0.0), default=None)

    async def evict(self, model: ServingModel) -> None:
        """Put a lazy record in the place of ``model`` (requests from now load it again), and wait until its calls
        in flight have finished and its memory is let go."""
        key = (model.name, model.version)
        predictor = self.pristine.get(key) or await to_thread.run_sync(self.fresh, *key)
        if predictor is None:  # its plugin is gone since: its next load fails, and says why
            predictor = model.predictor
        self.pristine[key] = predictor
        self.swap(serving.describe(lazy(predictor, model.source), model.metadata))
        self.server.metrics.model_evictions.labels(*key).inc()
        self.count_loaded()
        logger.info("model %s version %s unloaded to keep within the memory budget (it held %s)", *key,
                    described_size(size_of(model)))  # fmt: skip
        # Waited for, its unload too: what it held must be gone before the next load is measured.
        await serving.retire(model, self.server.settings.limits_for(model.predictor).timeout, aside=False)

    async def let_go(self, evicted: list[Key]) -> None:
        """Let what the ``evicted`` models held in reference cycles go, with one collection, and hand the freed
        memory back to the system."""
        if gc.get_freeze_count() and any(self.thawed_at.get(key) != self.thaws for key in evicted):
            # One was loaded before the heap was last frozen (at startup, or by a thaw since): only a thaw lets its
            # objects go, a full collection of tens of milliseconds; once for such a model.
            self.release_frozen()
        else:  # never frozen: a collection of what is not frozen lets them go, in a few milliseconds
            gc.collect()
        await to_thread.run_sync(return_freed_memory)

    def release_frozen(self) -> None:
        """Thaw the frozen heap for one full collection, then freeze it again (``release_memory``): every model
        loaded so far is frozen from now on."""
        if self.release_memory is not None:
            self.release_memory()
            self.thaws += 1

    def count_loaded(self) -> None:
        """The models loaded, and what each model holds (0: not loaded), in the metrics."""
        metrics = self.server.metrics
        models = self.server.registry.models
        metrics.models_loaded.set(sum(model.ready for model in models))
        for model in models:
            metrics.model_memory.labels(model.name, model.version).set(size_of(model) if model.ready else 0)


def retrieved(task: asyncio.Task[None]) -> None:
    """A load whose waiters all timed out: its outcome was logged as it failed (nobody is left to hear it)."""
    if not task.cancelled():
        task.exception()


def size_of(model: ServingModel) -> int:
    return model.loaded.memory or 0


def copied(predictor: Predictor) -> Predictor:
    """A copy of a predictor not loaded, for a load: deep where it can be (nothing of it is shared with the
    model loaded from it), else shallow (a predictor holding what cannot be copied, such as a lock)."""
    try:
        return copy.deepcopy(predictor)
    except Exception as error:  # an attribute that cannot be copied
        logger.debug("model %s: predictor copied shallowly (%s)", predictor.name, error)
        return copy.copy(predictor)


def described_size(size: int | None) -> str:
    if size is None:
        return "an unknown amount of memory"
    return f"{size / 2**20:.1f} MiB"
