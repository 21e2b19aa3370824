"""Prometheus metrics, correct with several worker processes (prometheus-client's multiprocess mode).

With ``--workers N``, ``run`` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory before the workers start; each worker writes its samples there and
``/metrics`` aggregates them, so any worker answers for all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from stevedore_server.base import tracing

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Seconds: a model loads in milliseconds (a small file) to minutes (a large one from object storage).
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Seconds: trainings take from seconds to days.
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0, 72 * 3600.0)
#: Families that name software versions (of the server and of each plugin distribution): they tell an attacker
#: which known flaws to try, so ``/metrics`` leaves them out for a caller without a key. The rest stays for
#: Prometheus: request, inference and job metrics by route, model and model version (a model's version names
#: its training, not software).
VERSION_FAMILIES = frozenset({"stevedore_info"})


class Metrics:
    """The server's metrics, on a registry of their own (so each app, and each test, starts from zero)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        #: With ``--workers N``: the directory of every worker's samples, which ``exposition`` aggregates.
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "stevedore_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=registry
        )
        self.request_seconds = Histogram(
            "stevedore_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.grpc_requests = Counter(
            "stevedore_grpc_requests", "gRPC calls answered, by status code", ["method", "code"], registry=registry
        )
        self.grpc_request_seconds = Histogram(
            "stevedore_grpc_request_duration_seconds",
            "Time to answer a gRPC call",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        model = ["model", "version", "action"]
        self.inferences = Counter(
            "stevedore_inferences", "Inferences answered (predict or score)", model, registry=registry
        )
        self.inference_errors = Counter(
            "stevedore_inference_errors",
            "Inferences that failed, by kind: error (the model raised or gave junk), timeout, overloaded",
            [*model, "kind"],
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "stevedore_inference_duration_seconds",
            "Time from admission to answer of an inference, waiting included",
            model,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "stevedore_batch_size",
            "Requests merged into one model call",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.requests_dropped = Counter(
            "stevedore_requests_dropped",
            "Inference requests given up before their model ran them, by reason: disconnected (the client left "
            "while they waited), deadline (their deadline passed first)",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.payload_log_dropped = Counter(
            "stevedore_payload_log_dropped",
            "Payload log records dropped, by reason: queue_full, sink_error, shutdown, unreadable",
            ["reason"],
            registry=registry,
        )
        for reason in ("queue_full", "sink_error", "shutdown", "unreadable"):  # each at 0 from the start
            self.payload_log_dropped.labels(reason)
        self.model_ready = Gauge(
            "stevedore_model_ready",
            "1 when the model is loaded and self-tested",
            ["model", "version"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.jobs_finished = Counter(
            "stevedore_jobs_finished",
            "Jobs that ended, by model, kind and final state (succeeded, failed, cancelled, interrupted)",
            ["model", "kind", "state"],
            registry=registry,
        )
        self.jobs_running = Gauge(
            "stevedore_jobs_running",
            "Jobs running in this server's processes",
            ["model", "kind"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.job_seconds = Histogram(
            "stevedore_job_duration_seconds",
            "Time a job ran, from its start to its end, by model, kind and final state",
            ["model", "kind", "state"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.process_memory = Gauge(
            "stevedore_model_process_resident_bytes",
            "Resident memory of each worker process of a model run in processes (`[models.NAME] processes`)",
            ["model", "version", "process"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.model_loads = Counter(
            "stevedore_model_loads",
            "Models loaded while serving (a lazy model's first request, or back after an eviction), by outcome: "
            "loaded, failed",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.model_load_seconds = Histogram(
            "stevedore_model_load_duration_seconds",
            "Time to load and self-test a model while serving",
            ["model", "version"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.model_evictions = Counter(
            "stevedore_model_evictions",
            "Models unloaded to keep within the memory budget (`model_memory_budget`)",
            ["model", "version"],
            registry=registry,
        )
        self.model_memory = Gauge(
            "stevedore_model_memory_bytes",
            "Memory a loaded model holds, as measured after its load (0: not loaded), in each server process",
            ["model", "version"],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.models_loaded = Gauge(
            "stevedore_models_loaded",
            "Models loaded in each server process (counted in its memory budget)",
            [],
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.trace_spans_dropped = Counter(
            "stevedore_trace_spans_dropped",
            "Spans not exported, by reason: queue_full (the export queue was full), export_failed (the collector "
            "did not take them)",
            ["reason"],
            registry=registry,
        )
        for reason in ("queue_full", "export_failed"):
            self.trace_spans_dropped.labels(reason)  # shown at 0 before any drop
        # The spans of this process are counted in the metrics it serves (the last app made, in a test's process).
        tracing.count_drops(lambda reason, count: self.trace_spans_dropped.labels(reason).inc(count))
        self.pipeline_requests = Counter(
            "stevedore_pipeline_requests",
            "Pipeline calls answered, by outcome: ok, failed (a step's failure failed it), timeout (a step's)",
            ["pipeline", "outcome"],
            registry=registry,
        )
        self.pipeline_seconds = Histogram(
            "stevedore_pipeline_duration_seconds",
            "Time to run a pipeline, every step included",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pipeline_steps = Counter(
            "stevedore_pipeline_steps",
            "Steps of pipelines run, by outcome: ok, failed (a hard step: the pipeline failed), skipped (a soft "
            "step failed and was passed over), timeout",
            ["pipeline", "node", "model", "outcome"],
            registry=registry,
        )
        self.traffic_requests = Counter(
            "stevedore_traffic_requests",
            "Calls of a traffic name (`[traffic.NAME]`), by the variant that answered",
            ["traffic", "model", "version"],
            registry=registry,
        )
        self.shadow_comparisons = Counter(
            "stevedore_shadow_comparisons",
            "Shadow answers compared with the live ones, by outcome: equal, different, failed (the shadow's call "
            "failed), dropped (shed: the server stayed busy, too many pending, or the shadow's queue full)",
            ["traffic", "live", "shadow", "outcome"],
            registry=registry,
        )
        self.info = Gauge(
            "stevedore_info",
            "Versions of the server and of each plugin distribution (value 1)",
            ["component", "version"],
            multiprocess_mode="max",
            registry=registry,
        )

    def describe_server(self) -> None:
        self.info.labels("stevedore-server", version("stevedore-server")).set(1)

    def describe_model(self, name: str, model_version: str, ready: bool, plugin: tuple[str, str] | None) -> None:
        """A model's readiness, and the distribution and version of the plugin that ships it."""
        self.model_ready.labels(name, model_version).set(1 if ready else 0)
        if plugin is not None:
            self.info.labels(*plugin).set(1)

    def report_process_memory(self, model: str, model_version: str, index: int, resident: int | None) -> None:
        """A model's worker process ``index`` uses ``resident`` bytes; None: it is gone.

        A gone process's series is dropped, but not with ``--workers N``: prometheus-client's multiprocess mode
        keeps each sample in the file of the server worker that wrote it and cannot remove one there (it warns
        on stderr instead). The series then says 0, no memory held, so sums over it stay right; the process's
        successor (of the same index) writes over it."""
        labels = (model, model_version, str(index))
        if resident is not None or self.multiprocess_dir:
            self.process_memory.labels(*labels).set(resident or 0)
            return
        try:
            self.process_memory.remove(*labels)
        except KeyError:  # never reported
            pass

    def exposition(self, versions: bool = True, open_metrics: bool = False) -> tuple[bytes, str]:
        """The text format (or OpenMetrics', which shows the exemplars: the trace of a latency sample): this
        process's metrics, or every worker's in multiprocess mode; without ``VERSION_FAMILIES`` unless ``versions``
        (``/metrics`` answers a caller without a key so)."""
        source = self.registry
        if self.multiprocess_dir:
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        if not versions:
            source = without(source, VERSION_FAMILIES)
        if open_metrics:
            return openmetrics.generate_latest(source), openmetrics.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
        return generate_latest(source), CONTENT_TYPE_LATEST


class Without(Collector):
    """A registry's metric families but some, by name."""

    def __init__(self, source: CollectorRegistry, names: frozenset[str]) -> None:
        self.source = source
        self.names = names

    def collect(self) -> Iterable[Metric]:
        return (family for family in self.source.collect() if family.name not in self.names)


def without(source: CollectorRegistry, names: frozenset[str]) -> CollectorRegistry:
    filtered = CollectorRegistry(auto_describe=False)  # no describe: nothing collected at registration
    filtered.register(Without(source, names))
    return filtered


def fresh_multiprocess_dir() -> Path:
    """An empty directory for the workers' samples: left-overs of an earlier run would be counted again."""
    configured = os.environ.get(MULTIPROC_ENV)
    directory = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="stevedore-metrics-"))
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


class ModelMetrics:
    """One model's inference metrics, with their label lookups done once (they cost more than the samples)."""

    def __init__(self, metrics: Metrics | None, name: str, model_version: str) -> None:
        self.metrics = metrics
        self.labels = (name, model_version)
        self.samples: dict[str, tuple[Any, Any]] = {}

    def observe(self, action: str, started: float) -> None:
        """One inference answered, ``started`` (``time.perf_counter``) at its admission."""
        if self.metrics is None:
            return
        samples = self.samples.get(action)
        if samples is None:
            labels = (*self.labels, action)
            samples = self.metrics.inferences.labels(*labels), self.metrics.inference_seconds.labels(*labels)
            self.samples[action] = samples
        samples[0].inc()
        samples[1].observe(time.perf_counter() - started, tracing.exemplar())

    def count_error(self, action: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.inference_errors.labels(*self.labels, action, kind).inc()

    def count_dropped(self, reason: str) -> None:
        """A request given up before its model ran it (``core.deadlines``)."""
        if self.metrics is not None:
            self.metrics.requests_dropped.labels(*self.labels, reason).inc()

    def batch(self, size: int) -> None:
        if self.metrics is not None:
            self.metrics.batch_size.labels(*self.labels).observe(size)


def forget_process(pid: int) -> None:
    """Drop the live gauges of a server process that is gone (``--workers N``: a worker killed, or replaced), so
    that what it had running (jobs) stops counting; a no-op outside multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus-client has no hints there
