"""A model as served: what loading produced, with what serving adds to it.

A ``ServingModel`` is built once (``describe``, then ``start`` gives it its
runtime inside the event loop) and never changed: to serve a model another way
(a new runtime, a reloaded artifact), build a new one and swap it into the
registry (``Registry.replace``); calls in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from anyio import to_thread

from stevedore_server.base.errors import NoTensorInterface
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.loading import LoadedModel, State
from stevedore_server.predictor import Predictor
from stevedore_server.processes import predictor as process_predictor

from .inline import calibrate
from .runtime import ModelRuntime, Runtime
from .signature import Signature, signature_of

logger = logging.getLogger("stevedore.serving")


@dataclass(frozen=True)
class ServingModel:
    """One model's serving state: its loaded record, catalogue metadata, tensor signature and runtime."""

    loaded: LoadedModel
    #: The catalogue fields the ``stevedore_catalogue_metadata`` hooks gave (read-only).
    metadata: Mapping[str, Any]
    #: The V2 tensor signature, or None with ``no_tensor_reason`` saying why there is none.
    signature: Signature | None
    no_tensor_reason: str | None
    #: How its calls run; None until ``start`` (and for a model that is not ready).
    runtime: Runtime | None = None

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def predictor(self) -> Predictor:
        return self.loaded.predictor

    @property
    def source(self) -> PluginSource:
        return self.loaded.source

    @property
    def ready(self) -> bool:
        return self.loaded.ready

    @property
    def servable(self) -> bool:
        """Ready, or lazy (its first call loads it: a model evicted to keep within the memory budget is still
        served); what the catalogues of callers that load on demand list (``/v1/models``, MCP tools)."""
        return self.loaded.ready or self.loaded.state is State.LAZY

    @property
    def failed(self) -> bool:
        """Loading or the self-test failed (a model not loaded yet, or unloaded, has not)."""
        return self.loaded.state is State.FAILED

    @property
    def state(self) -> State:
        return self.loaded.state

    @property
    def reason(self) -> str | None:
        return self.loaded.reason

    def schema(self, kind: str) -> dict[str, Any]:
        return self.loaded.schema(kind)


def describe(loaded: LoadedModel, metadata: Mapping[str, Any]) -> ServingModel:
    """The serving state of a loaded model, without its runtime yet."""
    signature, reason = tensor_signature(loaded)
    return ServingModel(loaded, metadata, signature, reason)


def tensor_signature(loaded: LoadedModel) -> tuple[Signature | None, str | None]:
    """The model's V2 tensors, or None and the reason it has none (logged: its other routes still work)."""
    if not loaded.ready:
        return None, f"the model is not ready: {loaded.reason}"
    try:
        return signature_of(loaded), None
    except NoTensorInterface as error:
        logger.warning("model %s version %s has no V2 interface: %s", loaded.name, loaded.version, error)
        return None, str(error)
    except Exception as error:  # a plugin's odd declaration must not stop the server
        logger.error("model %s version %s has no V2 interface", loaded.name, loaded.version, exc_info=error)
        return None, f"its tensors could not be worked out: {type(error).__name__}: {error}"


async def start(model: ServingModel, settings: Settings, metrics: Metrics | None) -> ServingModel:
    """``model`` with its runtime, made inside the event loop; a model that is not ready gets none.

    Calibration times the model's calls (see ``inline``), so it runs off the loop.
    """
    if not model.ready:
        return model
    limits = settings.limits_for(model.predictor)
    if metrics is not None:
        process_predictor.report_memory(model.predictor, metrics.report_process_memory)
    cost = await to_thread.run_sync(calibrate, model.loaded, limits.inline_budget) if limits.inline_budget else None
    return replace(model, runtime=ModelRuntime(model.loaded, limits, metrics, cost))


#: Seconds between the looks of ``retire`` at a replaced model's calls.
RETIRE_POLL_INTERVAL = 0.05


async def retire(model: ServingModel, timeout: float, aside: bool = True) -> bool:
    """Close a replaced model's runtime once its calls in flight have finished, or after ``timeout`` seconds
    (its threads are then abandoned to end on their own, as a timed-out call's are). True if it ended idle.
    ``aside``: its predictor's ``unload`` runs on a thread of its own, not waited for; else it has run on return
    (what the model held is let go: the memory budget measures the next load)."""
    runtime = model.runtime
    if runtime is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not runtime.idle and loop.time() < deadline:
            await asyncio.sleep(RETIRE_POLL_INTERVAL)
    finally:  # a shutdown that cancels the wait closes it too
        idle = runtime.idle
        if not idle:
            logger.warning("model %s version %s retired with calls still running", model.name, model.version)
        if aside:
            runtime.close(unload_aside=True)
        else:
            await to_thread.run_sync(runtime.close)
    return idle
