"""The Serve application of the installed plugins: one deployment a model and the ingress, with their options
from the settings, and the Serve config file (``serve deploy``, KubeRay's RayService) that deploys them.

Imports no Ray: ``stevedore-server ray --config-only`` writes the file where Ray is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stevedore_server.base.settings import Settings
from stevedore_server.predictor import Predictor

#: The Serve application's name, the builder Serve imports, and the ingress deployment's name.
APP_NAME = "stevedore"
IMPORT_PATH = "stevedore_server.rayserve.app:build"
INGRESS = "Ingress"
#: A model replica reserves one CPU, as Serve's own default; the ingress only parses, checks and forwards.
MODEL_CPUS = 1.0
INGRESS_CPUS = 0.0
#: Seconds between Serve's calls of a replica's health check (the plugins' checks).
HEALTH_CHECK_PERIOD = 10.0


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


def ingress_options(settings: Settings) -> dict[str, Any]:
    return {
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": INGRESS_CPUS},
        "max_ongoing_requests": 1000,
        "graceful_shutdown_timeout_s": settings.graceful_timeout,
    }


def serve_config(settings: Settings, predictors: Sequence[Predictor], host: str, port: int) -> dict[str, Any]:
    """The Serve config file of the application: the builder with the settings as its arguments, and each
    deployment with its options spelt out, to read and edit (the file's options win over the builder's)."""
    deployments = [{"name": INGRESS, **ingress_options(settings)}]
    deployments += [
        {"name": deployment_name(p.name, p.version), **model_options(settings, p)}
        for p in predictors
        if settings.loads_at_startup(p.name)
    ]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
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
