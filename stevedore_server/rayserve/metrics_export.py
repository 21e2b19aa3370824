"""A model replica's metrics through Ray's: what ``stevedore-server run`` has on ``/metrics`` for a model (its
inferences, errors, latency histogram, batch sizes, dropped requests, worker processes' memory...), for Ray's
metrics agent on the replica's node to serve to Prometheus on the node's metrics export port
(``ray start --metrics-export-port``).

Every ``EXPORT_INTERVAL`` seconds each sample of the replica's own registry is
set on a Ray gauge of the sample's name (Ray prefixes ``ray_``: a replica's
``stevedore_inferences_total`` is ``ray_stevedore_inferences_total``), with
its labels and ``replica`` and ``node``, the replica's and its node's ids (as
in ``X-Served-By``). A histogram's ``_bucket``, ``_sum`` and ``_count``
samples keep their names and ``le``, so ``histogram_quantile`` and ``rate``
read them as they read ``run``'s; the ``_created`` timestamps are left out.
Ray's own export runs about every 10 s, which bounds how fresh they are.

A replica of the multiplexed deployment has one export, of the registries of
the models it holds now; a model it unloaded keeps its last values in Ray's
gauges (Ray cannot drop a series), and starts again from zero when it is
loaded again, which ``rate`` reads as a counter's reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge as PrometheusGauge
from ray.util.metrics import Gauge

from stevedore_server.base.metrics import VERSION_FAMILIES

logger = logging.getLogger("stevedore.rayserve")

#: Seconds between two copies of the replica's samples into Ray's gauges.
EXPORT_INTERVAL = 5.0
#: The labels every exported sample gets: which replica, on which node.
REPLICA_LABELS = ("replica", "node")


#: The registries to export now: a model's deployment's replica has one, a multiplexed one each held model's.
Registries = Callable[[], Iterable[CollectorRegistry]]
#: A series: its sample's name and labels.
Series = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Sample:
    documentation: str
    labels: dict[str, str]
    value: float


class RayMetrics:
    """Copies the samples of ``registries`` into Ray's gauges, labelled with ``replica`` and ``node``."""

    def __init__(self, registries: Registries, replica: str, node: str) -> None:
        self.registries = registries
        self.labels = {"replica": replica, "node": node}
        self.gauges: dict[str, Gauge] = {}

    def export(self) -> None:
        """Every sample, as it is now."""
        for (name, _), sample in merged(self.registries()).items():
            gauge = self.gauge(name, sample.documentation, tuple(sample.labels))
            gauge.set(sample.value, tags={**sample.labels, **self.labels})

    def gauge(self, name: str, documentation: str, label_names: tuple[str, ...]) -> Gauge:
        gauge = self.gauges.get(name)
        if gauge is None:
            gauge = Gauge(name, documentation, tag_keys=label_names + REPLICA_LABELS)
            self.gauges[name] = gauge
        return gauge

    async def run(self, interval: float = EXPORT_INTERVAL) -> None:
        """Export now and then every ``interval`` seconds, until cancelled; an export that fails is logged."""
        while True:
            try:
                self.export()
            except Exception as error:  # a metric Ray refuses must not stop the others' export, nor the replica
                logger.warning("the replica's metrics were not exported to Ray: %s", error)
            await asyncio.sleep(interval)


def merged(registries: Iterable[CollectorRegistry]) -> dict[Series, Sample]:
    """Each series' sample over ``registries``, without the ``_created`` ones. Models held in one replica share
    the series without a model label (``stevedore_models_loaded``...): one process's counts, so their values
    add up; a software version's (value 1) is the same in each."""
    series: dict[Series, Sample] = {}
    for registry in registries:
        for family in registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = series.get(key)
                if seen is None:
                    series[key] = Sample(family.documentation, dict(sample.labels), sample.value)
                elif family.name in VERSION_FAMILIES:
                    seen.value = max(seen.value, sample.value)
                else:
                    seen.value += sample.value
    return series


class Exporting:
    """``metrics``' export, running on the replica's event loop until ``stop``."""

    def __init__(self, metrics: RayMetrics) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(metrics.run())

    def stop(self) -> None:
        """Cancel the export; from any thread (Serve may call a replica's ``__del__`` off its loop)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.task.cancel)


def exports_running() -> int:
    """The exports running on this event loop: one per replica, whatever models it held."""
    return sum(1 for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") == "RayMetrics.run")


def export_metrics(registries: Registries, served_by: str) -> Exporting:
    """Start exporting ``registries`` for the replica ``served_by`` (``<node id>/<replica id>``)."""
    node, replica = served_by.split("/")
    return Exporting(RayMetrics(registries, replica, node))


#: The ingress's ``/metrics`` line that says where the replicas' metrics are (its HELP text).
WHERE = (
    "Always 1. On Ray Serve the models run in their deployments' replicas, whose inference metrics are not here: "
    "each replica exports them through Ray's metrics, as ray_<name> (ray_stevedore_inferences_total...) labelled "
    "replica and node, on the metrics export port of the replica's node (ray start --metrics-export-port)"
)


def say_where(registry: CollectorRegistry) -> None:
    """The ingress's metric ``stevedore_ray_replica_metrics``, whose help text says where the replicas' are."""
    PrometheusGauge("stevedore_ray_replica_metrics", WHERE, registry=registry).set(1)
