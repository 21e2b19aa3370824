"""Kubernetes manifests for an image of the server and its models: ``stevedore-server manifests``.

    resources = render(Deployment("ghcr.io/acme/models:1", ["iris"]))  # file name -> resource
    write(resources, Path("k8s"))

Two sets, one resource a file:

- KServe: a ``ClusterServingRuntime`` that runs the image as KServe's
  ``kserve-container`` (Open Inference Protocol v2, one supported model format
  per model the image serves, plus ``stevedore`` for any of them), and a
  sample ``InferenceService`` using it;
- plain Kubernetes, for teams without KServe: a ``Deployment``, its
  ``Service``, a ``HorizontalPodAutoscaler`` and a ``PodDisruptionBudget``.

Both run the container alike (``container``): non-root by number, read-only
root file system with ``/tmp`` as the one writable path, no capabilities;
probes on ``/readyz`` and ``/livez``; Prometheus scraping ``/metrics``; and a
shutdown delay that lets endpoints drop the pod before the server stops
accepting connections, within a termination grace period that also covers the
in-flight requests' graceful time-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The ports by default: KServe's runtimes serve HTTP on 8080.
HTTP_PORT = 8080
GRPC_PORT = 8081
#: Seconds the pod keeps serving after SIGTERM while endpoints drop it (the server's ``shutdown_delay``).
SHUTDOWN_DELAY = 5
#: Seconds in-flight requests get after that (the server's ``graceful_timeout``).
GRACEFUL_TIMEOUT = 30
#: The user and group the image runs as (its Containerfile's ``USER``).
USER_ID = 10001
#: The model format every runtime serves: a stevedore plugin's model, whatever its name.
ANY_MODEL_FORMAT = "stevedore"


@dataclass(frozen=True)
class Deployment:
    """What the manifests describe: an image, the models it serves, and names and sizes."""

    image: str
    models: list[str]
    name: str = "stevedore-server"
    namespace: str | None = None
    replicas: int = 2
    max_replicas: int = 5
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "model-server"}


def render(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Every manifest by file name."""
    return {
        "clusterservingruntime.yaml": cluster_serving_runtime(deployment),
        "inferenceservice.yaml": inference_service(deployment),
        "deployment.yaml": kubernetes_deployment(deployment),
        "service.yaml": service(deployment),
        "horizontalpodautoscaler.yaml": autoscaler(deployment),
        "poddisruptionbudget.yaml": disruption_budget(deployment),
    }


def write(resources: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, resource in resources.items():
        path = directory / file_name
        path.write_text(yaml.safe_dump(resource, sort_keys=False))
        written.append(path)
    return written


# -- the container both sets run ----------------------------------------------------


def server_args(deployment: Deployment) -> list[str]:
    return [
        "run", "--host", "0.0.0.0", "--port", str(deployment.http_port), "--grpc-port", str(deployment.grpc_port),
        "--shutdown-delay", str(SHUTDOWN_DELAY), "--graceful-timeout", str(GRACEFUL_TIMEOUT),
    ]  # fmt: skip


def container(deployment: Deployment, name: str) -> dict[str, Any]:
    """The server's container: its command, ports, probes, resources and a restrictive security context."""
    return {
        "name": name,
        "image": deployment.image,
        "command": ["stevedore-server"],
        "args": server_args(deployment),
        "env": [{"name": "TMPDIR", "value": "/tmp"}],
        "ports": [{"name": "http", "containerPort": deployment.http_port, "protocol": "TCP"}],
        "readinessProbe": probe(deployment, "/readyz", period=5, failures=2),
        "livenessProbe": probe(deployment, "/livez", period=10, failures=6),
        "startupProbe": probe(deployment, "/livez", period=2, failures=60),
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def probe(deployment: Deployment, path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": deployment.http_port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def prometheus_annotations(deployment: Deployment) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(deployment.http_port),
        "prometheus.io/path": "/metrics",
    }


def metadata(deployment: Deployment, name: str | None = None, namespaced: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name or deployment.name, "labels": deployment.labels}
    if namespaced and deployment.namespace:
        found["namespace"] = deployment.namespace
    return found


# -- KServe -------------------------------------------------------------------------


def cluster_serving_runtime(deployment: Deployment) -> dict[str, Any]:
    """KServe's runtime for the image: ``kserve-container``, protocol v2, a model format per model."""
    formats = [{"name": ANY_MODEL_FORMAT, "autoSelect": True, "priority": 1}]
    formats += [{"name": model, "autoSelect": True, "priority": 2} for model in deployment.models]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": metadata(deployment, namespaced=False),
        "spec": {
            "annotations": {
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "prometheus.kserve.io/port": str(deployment.http_port),
                "prometheus.kserve.io/path": "/metrics",
            },
            "supportedModelFormats": formats,
            "protocolVersions": ["v2"],
            "containers": [container(deployment, "kserve-container")],
            "volumes": [tmp_volume()],
        },
    }


def inference_service(deployment: Deployment) -> dict[str, Any]:
    """A sample ``InferenceService`` on the runtime: its first model, Open Inference Protocol v2."""
    model = deployment.models[0] if deployment.models else ANY_MODEL_FORMAT
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(deployment, name=f"{deployment.name}-{model}".lower()[:63]),
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": deployment.max_replicas,
                "terminationGracePeriodSeconds": termination_grace(),
                "model": {
                    "modelFormat": {"name": model},
                    "runtime": deployment.name,
                    "protocolVersion": "v2",
                },
            }
        },
    }


def termination_grace() -> int:
    """The shutdown delay, the in-flight requests' time-out, and a little more."""
    return SHUTDOWN_DELAY + GRACEFUL_TIMEOUT + 5


# -- plain Kubernetes --------------------------------------------------------------


def kubernetes_deployment(deployment: Deployment) -> dict[str, Any]:
    server = container(deployment, "server")
    grpc_port = {"name": "grpc", "containerPort": deployment.grpc_port, "protocol": "TCP"}
    server["ports"] = [*server["ports"], grpc_port]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(deployment),
        "spec": {
            "replicas": deployment.replicas,
            "selector": {"matchLabels": deployment.labels},
            "template": {
                "metadata": {"labels": deployment.labels, "annotations": prometheus_annotations(deployment)},
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace(),
                    "securityContext": {"runAsNonRoot": True, "fsGroup": USER_ID},
                    "containers": [server],
                    "volumes": [tmp_volume()],
                },
            },
        },
    }


def service(deployment: Deployment) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(deployment),
        "spec": {
            "selector": deployment.labels,
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": deployment.grpc_port, "targetPort": "grpc", "appProtocol": "grpc"},
            ],
        },
    }


def autoscaler(deployment: Deployment) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(deployment),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name},
            "minReplicas": deployment.replicas,
            "maxReplicas": max(deployment.max_replicas, deployment.replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def disruption_budget(deployment: Deployment) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(deployment),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": deployment.labels}},
    }
