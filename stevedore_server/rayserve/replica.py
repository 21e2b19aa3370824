"""A model's deployment: each replica loads and self-tests one model and serves it with its own runtime.

The ingress has already checked each payload against the model's schema, so a
replica only runs the model: its threads, admission, time-out and batching
(``runtime.ModelRuntime``: batching happens here, once). What a replica
answers is a ``Reply``, never an exception, so the ingress gets a client error
whole (status, details, headers) and a model's failure with the id it was
logged under here, with its traceback.

A model that fails to load or self-test is not retried: its replicas stay up
and report the failure, which the ingress shows as ``stevedore-server run``
does. The plugins' health checks are the replica's (``check_health``): one that
fails makes Serve replace the replica.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import ray
from anyio import to_thread
from ray import serve

from stevedore_server.base import tracing
from stevedore_server.base.errors import ClientError, ModelFailure, NotReady, StartupError
from stevedore_server.base.health import failing, run_checks
from stevedore_server.base.logs import TurnHandler, formatted, log_error, python_level
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer
from stevedore_server.core.startup import Loaded
from stevedore_server.plugins.builtin.health import BUILT_IN_CHECKS

from .config import settings_from_args
from .metrics_export import Exporting, export_metrics

logger = logging.getLogger("stevedore.rayserve")

#: The action of a predict computing only some outputs: its payload is the value and the outputs' names.
OUTPUTS = "predict_outputs"


@dataclass(frozen=True)
class LoadReport:
    """What loading the model found, for the ingress to describe it as a local one."""

    state: str
    reason: str | None
    created: str | None
    fixture_output: Any
    row_aligned: bool
    served_by: str


@dataclass(frozen=True)
class Reply:
    """One call's outcome: the result, or a client error, or a failure logged here; and who answered."""

    served_by: str
    result: Any = None
    error: ClientError | None = None
    failure: tuple[str, str] | None = None  # (message, error id)


def served_by() -> str:
    """``<node id>/<replica id>`` of the calling replica."""
    return f"{ray.get_runtime_context().get_node_id()}/{serve.get_replica_context().replica_id.unique_id}"


def configure_logging(settings: Settings) -> None:
    """The ``stevedore`` loggers' lines as ``stevedore-server run`` writes them, on the replica's stderr (which
    Ray keeps in the worker's log). Not with ``dictConfig``: it would close the handlers Serve set up."""
    logger = logging.getLogger("stevedore")
    if any(isinstance(handler, TurnHandler) for handler in logger.handlers):
        return
    logger.addHandler(formatted(TurnHandler(sys.stderr), settings.log_format))
    logger.setLevel(python_level(settings.log_level))
    logger.propagate = False


def load_one(settings: Settings, name: str, version: str) -> ModelServer:
    """A server of the one model ``name`` ``version``, loaded and self-tested (blocking)."""
    from stevedore_server.plugins.loading import load_model

    candidates, _, hooks = startup.find(settings)
    found = [c for c in candidates if (c.predictor.name, c.predictor.version) == (name, version)]
    if not found:
        raise StartupError(f"no installed plugin provides model {name!r} version {version!r} on this node")
    model = load_model(found[0].predictor, found[0].source)
    # A replica answers its ingress, not HTTP: the plugins' routes are the ingress's.
    return startup.build_server(settings, Loaded((model,), (), hooks), serves_http=False)


class ModelReplica:
    """One replica of a model's deployment (``app.build`` makes it a Serve deployment)."""

    #: The export of its metrics to Ray's (a model held by a multiplexed replica has none: that replica's covers it).
    exporting: Exporting | None = None

    async def __init__(self, settings: dict[str, Any], name: str, version: str) -> None:  # type: ignore[misc]
        await self.start(settings, name, version)
        # Its inference metrics, as ``run``'s /metrics has them, through Ray's metrics (the node's export port).
        self.exporting = export_metrics(lambda: (self.server.metrics.registry,), self.served_by)

    async def start(self, settings: dict[str, Any], name: str, version: str) -> None:
        """Load, self-test and start the model. Serve awaits an async constructor: the runtime is made inside the
        replica's event loop. No secrets: the ingress answers the clients and keeps the jobs."""
        self.settings = settings_from_args(settings)
        configure_logging(self.settings)
        tracing.configure(self.settings.tracing)
        self.name, self.version = name, version
        self.server = await to_thread.run_sync(self.load_server, name, version)
        await startup.start_models(self.server)
        self.served_by = served_by()
        self.span_attributes = {"stevedore.model.name": name, "stevedore.model.version": version,
                                "stevedore.ray.replica": self.served_by}  # fmt: skip
        #: The plugins' checks: the built-in ones say whether the model loaded, which a restart would not mend.
        self.checks = {
            key: check for key, check in self.server.registry.health_checks.items() if key not in BUILT_IN_CHECKS
        }

    def load_server(self, name: str, version: str) -> ModelServer:
        """The server of this replica's one model (blocking); a trained version's replica makes it otherwise."""
        return load_one(self.settings, name, version)

    def report(self) -> LoadReport:
        model = self.server.registry.get(self.name, self.version)
        loaded = model.loaded
        return LoadReport(
            str(loaded.state), loaded.reason, loaded.created, loaded.fixture_output, loaded.row_aligned, self.served_by
        )

    async def call(self, action: str, payload: Any, rows: int | None, carrier: dict[str, str] | None = None) -> Reply:
        """Run ``action`` in the trace context ``carrier`` of the ingress's call: this replica's spans (its
        runtime's admission, batch, model) are children of the ingress's ``forward`` span."""
        with tracing.continued(carrier), tracing.span("replica", self.span_attributes, kind="server"):
            return await self._run(action, payload, rows)

    async def _run(self, action: str, payload: Any, rows: int | None) -> Reply:
        model = self.server.registry.get(self.name, self.version)
        runtime = model.runtime
        if runtime is None:
            reason = model.reason or model.state
            return Reply(self.served_by, error=NotReady(f"model {self.name!r} version {self.version!r}: {reason}"))
        try:
            if action == OUTPUTS:
                value, names = payload
                return Reply(self.served_by, result=await runtime.call_outputs(value, rows, tuple(names)))
            return Reply(self.served_by, result=await runtime.call(action, payload, rows))
        except ClientError as error:
            return Reply(self.served_by, error=error)
        except ModelFailure as failure:
            error_id = log_error(logger, str(failure), failure.error)
            return Reply(self.served_by, failure=(str(failure), error_id))

    def check_health(self) -> None:
        """Serve's health check: every plugin's check passes (a failing one names itself)."""
        problems = failing(run_checks(self.checks))
        if problems:
            raise RuntimeError("; ".join(problems))

    def __del__(self) -> None:
        if self.exporting is not None:
            self.exporting.stop()
        server = getattr(self, "server", None)
        if server is not None:
            startup.stop_models(server)
