"""Kubernetes manifests for an image of the server and its models: ``stevedore-server manifests``.

    resources = render(Deployment("ghcr.io/acme/models:1", ["iris"]))  # file name -> resource
    write(resources, Path("k8s"))

Two sets, one resource a file:

- KServe: a ``ClusterServingRuntime`` that runs the image as KServe's
  ``kserve-container`` (Open Inference Protocol v2, one supported model format
  per model the image serves, plus ``stevedore`` for any of them), and a
  sample ``InferenceService`` using it; and a second one for model files
  (``files_runtime``: the formats of the runtime wheels, each model from an
  ``InferenceService``'s ``storageUri``, which KServe's storage initializer
  downloads into ``/mnt/models``, started with KServe's own runtime
  arguments), with a sample ``InferenceService`` of its own;
- plain Kubernetes, for teams without KServe: a ``Deployment``, its
  ``Service``, a ``HorizontalPodAutoscaler``, a ``PodDisruptionBudget`` and a
  ``NetworkPolicy`` that lets in only the ingress controller's namespace and
  the Prometheus scraper's.

Both run the container alike (``container``): non-root by number, read-only
root file system with ``/tmp`` and the state directory (an ``emptyDir``, or a
claim's volume) as the writable paths, no capabilities; the API keys, when a
Secret is named, from that Secret as a read-only file; probes on ``/readyz``
and ``/livez``, which need no key (the server's ``--auth-health`` stays off);
Prometheus scraping ``/metrics``; and a shutdown delay that lets endpoints drop
the pod before the server stops accepting connections, within a termination
grace period that also covers the in-flight requests' graceful time-out.

The settings' pipelines become KServe ``InferenceGraph``s too, in ``inference_graph`` (on this module's
``InferenceService``), written by ``write`` with their notes as comments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
#: The state directory: the image's ``STEVEDORE_STATE_DIR`` (the jobs database, trained versions' artifacts).
STATE_DIR = "/var/lib/stevedore"
#: The item of the ``--api-key-secret`` Secret that holds the API key file (SHA-256 digests, one a line), and
#: where the container has it.
API_KEYS_ITEM = "api-keys"
SECRETS_DIR = "/var/run/secrets/stevedore"
#: The model formats of the runtime wheels (``stevedore.runtimes``), as KServe names them.
FILE_MODEL_FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx", "mlflow")
#: Where KServe's storage initializer puts the model of an ``InferenceService``'s ``storageUri``.
KSERVE_MODEL_DIR = "/mnt/models"
#: The sample model-file ``InferenceService``'s ``storageUri`` where none is given: a placeholder to replace.
SAMPLE_STORAGE_URI = "s3://my-bucket/models/iris"
#: The variable that lets the server read model files that run code when loaded (``--allow-pickle``).
ALLOW_PICKLE_VARIABLE = "STEVEDORE_ALLOW_PICKLE"
#: The namespaces let in by the NetworkPolicy by default: ingress-nginx's, and the Prometheus Operator's usual one.
INGRESS_NAMESPACE = "ingress-nginx"
METRICS_NAMESPACE = "monitoring"
#: The label Kubernetes gives every namespace, its name: what the NetworkPolicy selects namespaces by.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


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
    #: The Secret whose ``API_KEYS_ITEM`` is the API key file; None: no keys (every request is served).
    api_key_secret: str | None = None
    #: The PersistentVolumeClaim mounted as the state directory; None: an ``emptyDir`` (lost with the pod).
    state_claim: str | None = None
    #: The namespaces whose pods may reach the pods' HTTP and gRPC ports (the ingress controller's).
    ingress_namespaces: tuple[str, ...] = (INGRESS_NAMESPACE,)
    #: The namespaces whose pods may reach the HTTP port, for ``/metrics`` (the Prometheus scraper's).
    metrics_namespaces: tuple[str, ...] = (METRICS_NAMESPACE,)
    #: The model-file runtime reads every model file, pickles included (``files_runtime``).
    allow_pickle: bool = False
    #: The sample model-file ``InferenceService``: its model's format and ``storageUri``.
    model_format: str = FILE_MODEL_FORMATS[0]
    storage_uri: str = SAMPLE_STORAGE_URI

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/component": "model-server"}

    @property
    def api_key_file(self) -> str:
        return f"{SECRETS_DIR}/{API_KEYS_ITEM}"

    @property
    def files_runtime_name(self) -> str:
        return f"{self.name}-files"


def render(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Every manifest by file name."""
    return {
        "clusterservingruntime.yaml": cluster_serving_runtime(deployment),
        "inferenceservice.yaml": inference_service(deployment),
        "clusterservingruntime-files.yaml": files_runtime(deployment),
        "inferenceservice-files.yaml": files_inference_service(deployment),
        "deployment.yaml": kubernetes_deployment(deployment),
        "service.yaml": service(deployment),
        "horizontalpodautoscaler.yaml": autoscaler(deployment),
        "poddisruptionbudget.yaml": disruption_budget(deployment),
        "networkpolicy.yaml": network_policy(deployment),
    }


def write(
    resources: dict[str, dict[str, Any]], directory: Path, notes: Mapping[str, Sequence[str]] | None = None
) -> list[Path]:
    """Each resource in its file, after its ``notes`` (what it leaves out) as comments."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, resource in resources.items():
        path = directory / file_name
        comments = "".join(f"# {note}\n" for note in (notes or {}).get(file_name, ()))
        path.write_text(comments + yaml.safe_dump(resource, sort_keys=False))
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
        "env": environment(deployment),
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
        "volumeMounts": volume_mounts(deployment),
    }


def environment(deployment: Deployment) -> list[dict[str, str]]:
    env = [{"name": "TMPDIR", "value": "/tmp"}, {"name": "STEVEDORE_STATE_DIR", "value": STATE_DIR}]
    if deployment.api_key_secret:
        env.append({"name": "STEVEDORE_API_KEY_FILE", "value": deployment.api_key_file})
    return env


def volume_mounts(deployment: Deployment) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "state", "mountPath": STATE_DIR},
    ]
    if deployment.api_key_secret:
        mounts.append({"name": "api-keys", "mountPath": SECRETS_DIR, "readOnly": True})
    return mounts


def volumes(deployment: Deployment) -> list[dict[str, Any]]:
    """``/tmp``, the state directory, and the API key file when a Secret holds it."""
    found = [tmp_volume(), state_volume(deployment)]
    if deployment.api_key_secret:
        found.append(api_keys_volume(deployment.api_key_secret))
    return found


def probe(deployment: Deployment, path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": deployment.http_port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def state_volume(deployment: Deployment) -> dict[str, Any]:
    """The claim's volume when one is named; else an ``emptyDir``, so that jobs run on the read-only root file
    system (their database and artifacts then go with the pod)."""
    if deployment.state_claim:
        return {"name": "state", "persistentVolumeClaim": {"claimName": deployment.state_claim}}
    return {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}}


def api_keys_volume(secret: str) -> dict[str, Any]:
    """The Secret's API key file only, readable by the pod's group (``fsGroup``, the server's), by no one else."""
    return {
        "name": "api-keys",
        "secret": {
            "secretName": secret,
            "items": [{"key": API_KEYS_ITEM, "path": API_KEYS_ITEM}],
            "defaultMode": 0o440,
        },
    }


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
            "annotations": scraping(deployment),
            "supportedModelFormats": formats,
            "protocolVersions": ["v2"],
            "containers": [container(deployment, "kserve-container")],
            "volumes": volumes(deployment),
        },
    }


def inference_service(deployment: Deployment) -> dict[str, Any]:
    """A sample ``InferenceService`` on the runtime: its first model, Open Inference Protocol v2."""
    model = deployment.models[0] if deployment.models else ANY_MODEL_FORMAT
    return sample_inference_service(deployment, model, deployment.name, {})


def files_runtime(deployment: Deployment) -> dict[str, Any]:
    """KServe's runtime for model files: an ``InferenceService`` of one of ``FILE_MODEL_FORMATS`` with a
    ``storageUri``, which KServe's storage initializer downloads into ``/mnt/models``, served by the image's
    runtime wheels (``stevedore-server build --plugin plugins/sklearn ...``), its runtime guessed from the files.

    The container runs ``stevedore-server run`` with exactly the arguments KServe's own runtimes take
    (``kserve_args``: the model is named after the ``InferenceService``); the rest of the server's settings are
    variables. The image's plugin models are served beside it (an ``InferenceService`` named as one of them is a
    duplicate the server refuses).

    The formats are not auto-selected: an ``InferenceService`` chooses this runtime by name (``runtime:``), so
    installing it never takes over one that relies on KServe's own runtimes for the same formats.

    Pickles: the runtime refuses model files that run code when loaded (pickle, joblib, an MLflow model's
    cloudpickle) unless ``allow_pickle`` (``stevedore-server manifests --allow-pickle``) sets
    ``STEVEDORE_ALLOW_PICKLE=true`` for every model it serves: for a cluster whose model stores only its
    operators can write, as KServe's own runtimes assume. Without it skops, ONNX, XGBoost JSON/UBJ and LightGBM
    text files serve, and one ``InferenceService`` whose store its owner trusts opts in alone with
    ``env: [{name: STEVEDORE_ALLOW_PICKLE, value: "true"}]`` in its ``predictor.model`` (KServe merges it into
    the runtime's container)."""
    server = container(deployment, "kserve-container")
    server["command"] = ["stevedore-server", "run"]
    server["args"] = kserve_args(deployment)
    server["env"] = [*server["env"], *files_environment(deployment)]
    formats = [{"name": name, "autoSelect": False} for name in FILE_MODEL_FORMATS]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": metadata(deployment, name=deployment.files_runtime_name, namespaced=False),
        "spec": {
            "annotations": scraping(deployment),
            "supportedModelFormats": formats,
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [server],
            "volumes": volumes(deployment),
        },
    }


def kserve_args(deployment: Deployment) -> list[str]:
    """The arguments KServe's own runtimes take, in its template (``{{.Name}}``: the ``InferenceService``'s)."""
    return [
        "--model_name={{.Name}}",
        f"--model_dir={KSERVE_MODEL_DIR}",
        f"--http_port={deployment.http_port}",
        f"--grpc_port={deployment.grpc_port}",
    ]


def files_environment(deployment: Deployment) -> list[dict[str, str]]:
    """What ``server_args`` says as options, as variables (the arguments are KServe's alone)."""
    env = [
        {"name": "STEVEDORE_HOST", "value": "0.0.0.0"},
        {"name": "STEVEDORE_SHUTDOWN_DELAY", "value": str(SHUTDOWN_DELAY)},
        {"name": "STEVEDORE_GRACEFUL_TIMEOUT", "value": str(GRACEFUL_TIMEOUT)},
    ]
    if deployment.allow_pickle:
        env.append({"name": ALLOW_PICKLE_VARIABLE, "value": "true"})
    return env


def files_inference_service(deployment: Deployment) -> dict[str, Any]:
    """A sample ``InferenceService`` of a model file on the model-file runtime: its format, its ``storageUri``."""
    storage = {"storageUri": deployment.storage_uri}
    return sample_inference_service(deployment, deployment.model_format, deployment.files_runtime_name, storage)


def sample_inference_service(
    deployment: Deployment, model_format: str, runtime: str, model: dict[str, Any]
) -> dict[str, Any]:
    """An ``InferenceService`` of ``model_format`` on ``runtime``, Open Inference Protocol v2, with ``model``'s
    fields added to its predictor's model."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(deployment, name=f"{deployment.name}-{model_format}".lower()[:63]),
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": deployment.max_replicas,
                "terminationGracePeriodSeconds": termination_grace(),
                # The runtime's volumes (the key file, a claim for the state) belong to the server's group.
                "securityContext": {"fsGroup": USER_ID},
                "model": {"modelFormat": {"name": model_format}, "runtime": runtime, "protocolVersion": "v2"} | model,
            }
        },
    }


def scraping(deployment: Deployment) -> dict[str, str]:
    """A serving runtime's annotations that have KServe scrape its Prometheus metrics."""
    return {
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "prometheus.kserve.io/port": str(deployment.http_port),
        "prometheus.kserve.io/path": "/metrics",
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
                    # The server never calls the Kubernetes API: no token for whoever gets into the container.
                    "automountServiceAccountToken": False,
                    "containers": [server],
                    "volumes": volumes(deployment),
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


def network_policy(deployment: Deployment) -> dict[str, Any]:
    """Ingress to the pods from the ingress controller's namespaces (HTTP and gRPC) and the Prometheus scraper's
    (HTTP, for ``/metrics``) only. The kubelet's probes come from the node, which a NetworkPolicy never blocks."""
    rules = [
        allowed_from(deployment.ingress_namespaces, [deployment.http_port, deployment.grpc_port]),
        allowed_from(deployment.metrics_namespaces, [deployment.http_port]),
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(deployment),
        "spec": {
            "podSelector": {"matchLabels": deployment.labels},
            "policyTypes": ["Ingress"],
            "ingress": [rule for rule in rules if rule is not None],
        },
    }


def allowed_from(names: tuple[str, ...], ports: list[int]) -> dict[str, Any] | None:
    """A rule letting every pod of the namespaces named reach ``ports`` (TCP), by the label Kubernetes sets to a
    namespace's name; None for no namespace (a rule with no ``from`` would let in every source)."""
    if not names:
        return None
    sources = [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}} for name in names]
    return {"from": sources, "ports": [{"protocol": "TCP", "port": port} for port in ports]}
