"""The Serve application of the installed plugins: one deployment a model and the ingress, with their options
from the settings, the Serve config file (``serve deploy``, KubeRay's RayService) that deploys them, and the
builder's arguments and the settings read back from them.

Secrets (the API keys, the database's URL) are never in the arguments or a
``runtime_env``, which Ray shows to whoever can reach the cluster (dashboard,
``ray list actors --detail``) and every process a replica starts inherits:
``stevedore-server ray`` writes them to a file only its user can read, on the
node it runs on, and the arguments carry that file's path, which the ingress
alone reads (``SECRETS_FILE``).

Imports no Ray: ``stevedore-server ray --config-only`` writes the file where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import ENV_PREFIX, Settings, read_document
from stevedore_server.predictor import Predictor

#: The Serve application's name, the builder Serve imports, and the ingress deployment's name.
APP_NAME = "stevedore"
IMPORT_PATH = "stevedore_server.rayserve.app:build"
INGRESS = "Ingress"
#: The servicer function Serve's gRPC proxy imports (``grpc_proxy``).
GRPC_SERVICER = "stevedore_server.rayserve.grpc_proxy:add_inference_service"
#: A model replica reserves one CPU, as Serve's own default; the ingress only parses, checks and forwards.
MODEL_CPUS = 1.0
INGRESS_CPUS = 0.0
#: Seconds between Serve's calls of a replica's health check (the plugins' checks).
HEALTH_CHECK_PERIOD = 10.0
#: The builder's argument naming the file of the secret settings' ``STEVEDORE_*`` variables (a JSON object),
#: which the ingress reads; a Serve config may name one the operator provides.
SECRETS_FILE = "secrets_file"
#: The share of its node's own resource (``node:<address>``) the ingress asks for, to run on that node.
NODE_SHARE = 0.01


#: Per-model settings and the options of Serve's autoscaling config they set.
AUTOSCALING_OPTIONS = {
    "target_ongoing_requests": "target_ongoing_requests",
    "upscale_delay": "upscale_delay_s",
    "downscale_delay": "downscale_delay_s",
}


def deployment_name(name: str, version: str) -> str:
    """A model's deployment: ``iris:1.0`` (``:`` is in no model name or version)."""
    return f"{name}:{version}"


def model_options(settings: Settings, predictor: Predictor) -> dict[str, Any]:
    """The Serve options of a model's deployment, from its ``[models.NAME]`` table.

    A replica takes as many requests at once as its runtime admits (running, in batches, and waiting), so the
    model's own limits decide when it is full, as in ``stevedore-server run``."""
    own = settings.for_model(predictor.name)
    limits = settings.limits_for(predictor)
    options: dict[str, Any] = {}
    if own.autoscaling:
        low = 1 if own.min_replicas is None else own.min_replicas
        autoscaling: dict[str, Any] = {"min_replicas": low, "max_replicas": max(low, own.max_replicas or 1)}
        for setting, option in AUTOSCALING_OPTIONS.items():
            value = getattr(own, setting)
            if value is not None:
                autoscaling[option] = value
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = own.replicas or 1
    if own.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = own.max_replicas_per_node
    options["ray_actor_options"] = {"num_cpus": MODEL_CPUS} | (own.ray_actor_options or {})
    options["max_ongoing_requests"] = limits.capacity
    options["health_check_period_s"] = HEALTH_CHECK_PERIOD
    options["graceful_shutdown_timeout_s"] = settings.graceful_timeout
    return options


#: The deployment serving the models that load lazily (``multiplexed``); no model's (``:`` is in each of theirs).
MULTIPLEXED = "stevedore-multiplexed"


def multiplexed_options(settings: Settings, lazy: list[Predictor]) -> dict[str, Any]:
    """The deployment's Serve options: as many replicas as the lazy model asking the most, each with room for
    the resources of any model it may load and for the calls of ``max_models_per_replica`` models at once."""
    each = [model_options(settings, predictor) for predictor in lazy]
    held = settings.max_models_per_replica
    options: dict[str, Any] = {
        "num_replicas": max(one.get("num_replicas", 1) for one in each),
        "ray_actor_options": widest([one["ray_actor_options"] for one in each]),
        "max_ongoing_requests": held * max(one["max_ongoing_requests"] for one in each),
        "health_check_period_s": each[0]["health_check_period_s"],
        "graceful_shutdown_timeout_s": settings.graceful_timeout,
    }
    scaled = [one["autoscaling_config"] for one in each if "autoscaling_config" in one]
    if scaled:  # one model that scales makes the deployment scale, within the widest bounds asked
        del options["num_replicas"]
        options["autoscaling_config"] = {
            "min_replicas": max(config["min_replicas"] for config in scaled),
            "max_replicas": max(config["max_replicas"] for config in scaled),
        }
    return options


def widest(actor_options: list[dict[str, Any]]) -> dict[str, Any]:
    """Ray actor options a replica can load any of the models with: the most of each number asked (``num_cpus``,
    ``num_gpus``, ``memory``, each custom resource); the first model's for anything else."""
    merged: dict[str, Any] = {}
    for options in actor_options:
        for key, value in options.items():
            if key == "resources":
                resources = merged.setdefault("resources", {})
                for resource, amount in value.items():
                    resources[resource] = max(resources.get(resource, 0), amount)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] = max(merged.get(key, 0), value)
            else:
                merged.setdefault(key, value)
    return merged


def ingress_options(settings: Settings, node: str | None = None) -> dict[str, Any]:
    """The ingress's Serve options; on ``node`` (a node's resource, ``node:<address>``) if one is named: where
    its secrets file is."""
    actor_options: dict[str, Any] = {"num_cpus": INGRESS_CPUS}
    if node is not None:
        actor_options["resources"] = {node: NODE_SHARE}
    return {
        "num_replicas": 1,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": 1000,
        "graceful_shutdown_timeout_s": settings.graceful_timeout,
    }


def application_args(settings: Settings, secrets_file: Path | None = None) -> dict[str, Any]:
    """The builder's arguments: the settings without their secrets, and the path of the file that holds them."""
    args: dict[str, Any] = {"settings": settings.document()}
    if secrets_file is not None:
        args[SECRETS_FILE] = str(secrets_file)
    return args


def settings_from_args(args: Mapping[str, Any], secrets_file: str | None = None) -> Settings:
    """The settings the builder was given (``application_args``); the secrets from ``secrets_file`` (the
    ingress's), over those of the replica's environment (``STEVEDORE_*`` variables an operator set)."""
    values = read_document(args.get("settings") or {}, "the Serve application's args")
    secrets = read_secrets(secrets_file) if secrets_file else {}
    return Settings.load({**os.environ, **secrets}, "in the Serve application's args", **values)


def secrets_directory(settings: Settings) -> Path:
    """Where ``stevedore-server ray`` writes the secrets file: ``ray/`` in the state directory of this node."""
    if settings.state_dir is not None:
        return Path(settings.state_dir) / "ray"
    import platformdirs

    return Path(platformdirs.user_data_dir("stevedore-server")) / "ray"


def write_secrets(secrets: Mapping[str, str], directory: Path) -> Path:
    """The secrets, in ``directory`` (made only its user may enter) in a file only its user may read (0600),
    replaced whole; the file's path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{APP_NAME}-secrets.json"
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".secrets-")  # made 0600, for this user only
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(dict(secrets), file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_secrets(path: str) -> dict[str, str]:
    """The ``STEVEDORE_*`` variables of a secrets file; StartupError naming the file, never what it holds."""
    try:
        secrets = json.loads(Path(path).read_text())
    except OSError as error:
        raise StartupError(
            f"the secrets file {path}: {error.strerror}; `stevedore-server ray` writes it on the node it runs on, "
            "where the ingress runs, readable by that user only"
        ) from None
    except ValueError:
        raise StartupError(f"the secrets file {path} is not JSON") from None
    valid = isinstance(secrets, dict) and all(
        isinstance(name, str) and name.startswith(ENV_PREFIX) and isinstance(value, str)
        for name, value in secrets.items()
    )
    if not valid:
        raise StartupError(f"the secrets file {path} is not an object of STEVEDORE_* variables and their values")
    return dict(secrets)


def grpc_options(settings: Settings) -> dict[str, Any]:
    """Serve's gRPC proxy on the settings' ``grpc_port`` (every interface: Serve has no host for it), with the
    Open Inference Protocol's service, which the ingress answers (``grpc_proxy``, ``grpc_ingress``)."""
    return {"port": settings.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}


def serve_config(settings: Settings, predictors: Sequence[Predictor], host: str, port: int) -> dict[str, Any]:
    """The Serve config file of the application: the builder with the settings as its arguments, and each
    deployment with its options spelt out, to read and edit (the file's options win over the builder's)."""
    deployments = [{"name": INGRESS, **ingress_options(settings)}]
    deployments += [
        {"name": deployment_name(p.name, p.version), **model_options(settings, p)}
        for p in predictors
        if settings.loads_at_startup(p.name) and not settings.loads_lazily(p.name)
    ]
    lazy = [p for p in predictors if settings.loads_lazily(p.name)]
    if lazy:
        deployments.append({"name": MULTIPLEXED, **multiplexed_options(settings, lazy)})
    grpc = {"grpc_options": grpc_options(settings)} if settings.grpc_port else {}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        **grpc,
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"settings": settings.document()},
                "deployments": deployments,
            }
        ],
    }
