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
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge as PrometheusGauge
from ray.util.metrics import Gauge

logger = logging.getLogger("stevedore.rayserve")

#: Seconds between two copies of the replica's samples into Ray's gauges.
EXPORT_INTERVAL = 5.0
#: The labels every exported sample gets: which replica, on which node.
REPLICA_LABELS = ("replica", "node")


class RayMetrics:
    """Copies ``registry``'s samples into Ray's gauges, labelled with ``replica`` and ``node``."""

    def __init__(self, registry: CollectorRegistry, replica: str, node: str) -> None:
        self.registry = registry
        self.labels = {"replica": replica, "node": node}
        self.gauges: dict[str, Gauge] = {}

    def export(self) -> None:
        """Every sample, as it is now."""
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                gauge = self.gauge(sample.name, family.documentation, tuple(sample.labels))
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


#: The ingress's ``/metrics`` line that says where the replicas' metrics are (its HELP text).
WHERE = (
    "Always 1. On Ray Serve the models run in their deployments' replicas, whose inference metrics are not here: "
    "each replica exports them through Ray's metrics, as ray_<name> (ray_stevedore_inferences_total...) labelled "
    "replica and node, on the metrics export port of the replica's node (ray start --metrics-export-port)"
)


def say_where(registry: CollectorRegistry) -> None:
    """The ingress's metric ``stevedore_ray_replica_metrics``, whose help text says where the replicas' are."""
    PrometheusGauge("stevedore_ray_replica_metrics", WHERE, registry=registry).set(1)
