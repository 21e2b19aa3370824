"""Which models run in worker processes of their own, under the server's interpreter or another environment's,
and loading them there (the pool is ``pool``'s, starting a worker ``spawn``'s).

``[models.NAME] processes = N`` runs a model's inferences in N worker
processes (``worker``) instead of the server's threads, for CPU-bound
models that hold the GIL; ``python = ...`` runs them under another
interpreter, whose environment has the plugin and its own dependencies.

The server never loads such a model itself. Each worker process finds the
plugins installed where it runs, loads and self-tests the model, and tells the
server what it found; the server serves it through a ``ProcessPredictor``, a
predictor whose ``predict`` and ``score`` are calls to the pool. Everything
else is unchanged: ``loading.load_model`` compiles its schemas and self-tests
it again (through a worker, so the round trip is tested too), and its runtime
validates, admits, batches and counts its calls as any model's, on one thread
a worker process. A worker process that dies or overruns the model's time-out
is replaced; the call it had fails as a model failure (a 500 with an error id)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import subprocess
from typing import Any

from stevedore_server.base.errors import PluginError, StartupError
from stevedore_server.base.memory import growth
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginFailure, PluginSource
from stevedore_server.plugins.discovery import Candidate
from stevedore_server.plugins.loading import LoadedModel, State, load_model
from stevedore_server.plugins.model_files import model_files
from stevedore_server.predictor import Predictor

from .pool import ProcessPool
from .predictor import ProcessPredictor
from .spawn import LOAD_TIMEOUT, STOP_GRACE, interpreter, isolated, receive, start_worker

logger = logging.getLogger("stevedore.isolation")


def describe_environment(
    python: str, names: list[str] | None, settings: Settings
) -> tuple[list[Candidate], list[PluginFailure], list[PluginSource]]:
    """The models named ``names`` (None: all) that the plugins of ``python``'s environment provide, as candidates
    not yet loaded, the plugins that failed there, and every plugin installed there (selected or not); a
    StartupError if the interpreter cannot tell."""
    orders = {"mode": "describe", "names": names, **selection_orders(settings)}
    try:
        process, connection = start_worker(python, orders)
        with connection:
            found = receive(connection, process, LOAD_TIMEOUT, "finding its plugins")
        process.wait(timeout=STOP_GRACE)
    except (PluginError, subprocess.TimeoutExpired) as error:
        which = f"models {', '.join(names)}: " if names else ""
        raise StartupError(f"{which}python = {python}: {error}") from None
    candidates = [
        Candidate(ProcessPredictor.placeholder(name, version), source) for name, version, source in found["models"]
    ]
    return candidates, list(found["failures"]), list(found.get("installed", ()))


def selection_orders(settings: Settings) -> dict[str, Any]:
    plugins = list(settings.plugins) if settings.plugins is not None else None
    return {
        "plugins": plugins,
        "disable_plugins": list(settings.disable_plugins),
        "log_level": settings.log_level,
        "log_format": settings.log_format,
        # Traced as the server is: the OTEL_* variables pass on with the environment (``spawn``).
        "tracing": settings.tracing,
        # The worker makes its own predictors of the model files from the specs the server made.
        "model_files": [spec.as_json() for spec in model_files(settings)],
    }


def load_in_processes(candidate: Candidate, settings: Settings) -> LoadedModel:
    """Start the model's worker processes (each loads and self-tests it), then load its ``ProcessPredictor`` as
    any model: a failure anywhere is the model's recorded failure, with why."""
    name, version = candidate.predictor.name, candidate.predictor.version
    own = settings.for_model(name)
    python = interpreter(own)
    orders = {"mode": "serve", "model": name, "version": version, **selection_orders(settings)}
    pool = ProcessPool(python, orders, own.worker_processes, settings.limits_for(candidate.predictor).timeout)
    try:
        description = pool.start()
    except PluginError as error:
        reason = f"worker processes ({python}): {error}"
        logger.error("model %s version %s not served: %s", name, version, reason)
        return LoadedModel(candidate.predictor, candidate.source, State.FAILED, reason, None)
    placement = {
        "kind": "processes",
        "processes": own.worker_processes,
        "python": description["python"]["executable"],
        "python_version": description["python"]["version"],
    }
    predictor = ProcessPredictor(pool, description["declared"], placement)
    predictor.make_pool = functools.partial(ProcessPool, python, size=own.worker_processes, timeout=pool.timeout)
    predictor.created = description["created"]
    predictor.distribution_metadata = description["distribution"]
    predictor.streams = description["streams"]
    predictor.chooses_outputs = description["chooses_outputs"]
    loaded = load_model(predictor, candidate.source)
    if not loaded.ready:
        pool.close()
    return loaded


def load_candidate(candidate: Candidate, settings: Settings) -> LoadedModel:
    """Load a model where its settings say it runs: in worker processes, or in the server itself; a ready one
    with its memory measured (``processes_memory``, ``load_measured``)."""
    if settings.for_model(candidate.predictor.name).in_processes:
        loaded = load_in_processes(candidate, settings)
        return dataclasses.replace(loaded, memory=processes_memory(loaded.predictor)) if loaded.ready else loaded
    return load_measured(candidate.predictor, candidate.source, settings)


def load_measured(predictor: Predictor, source: PluginSource, settings: Settings) -> LoadedModel:
    """``load_model`` in this process, a ready model with how much the process grew as it loaded (libraries the
    first model of a kind imports count as its memory); traced too under a memory budget (``growth``)."""
    with growth(traced=settings.memory_budget is not None) as grown:
        loaded = load_model(predictor, source)
    return dataclasses.replace(loaded, memory=grown.bytes) if loaded.ready else loaded


def processes_memory(predictor: Predictor) -> int | None:
    """The resident memory of a model's worker processes; None where Linux's ``/proc`` cannot tell."""
    if not isinstance(predictor, ProcessPredictor) or not isinstance(predictor.pool, ProcessPool):
        return None
    sizes = [worker.resident_bytes() for worker in predictor.pool.processes()]
    return sum(size or 0 for size in sizes) if sizes else None


def isolated_candidates(
    settings: Settings,
) -> tuple[list[Candidate], list[PluginFailure], set[str], list[PluginSource]]:
    """The models of the ``[models.NAME]`` tables whose ``python`` is another interpreter, as that interpreter's
    plugins provide them (one start of each interpreter); the names they take from the server's own plugins;
    and the plugins installed there, selected or not (a selection may name them)."""
    by_python: dict[str, list[str]] = {}
    for name, model in settings.models.items():
        if isolated(model):
            by_python.setdefault(interpreter(model), []).append(name)
    candidates: list[Candidate] = []
    failures: list[PluginFailure] = []
    installed: list[PluginSource] = []
    for python, names in by_python.items():
        found, failed, there = describe_environment(python, names, settings)
        candidates += found
        failures += failed
        installed += there
        missing = set(names) - {candidate.predictor.name for candidate in found}
        for name in sorted(missing):
            source = PluginSource(entry_point=f"[models.{name}] python = {python}")
            failures.append(PluginFailure(source, f"no plugin under {python} provides a model named {name!r}"))
            logger.error("model %s: no plugin under %s provides it", name, python)
    return candidates, failures, {name for names in by_python.values() for name in names}, installed
