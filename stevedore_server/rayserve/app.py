"""The Serve application of the installed plugins (``build``, which Serve imports from a config file), and
deploying it on a running cluster (``deploy``, for ``stevedore-server ray``)."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup

from .config import APP_NAME, INGRESS, deployment_name, ingress_options, model_options
from .ingress import Ingress
from .replica import ModelReplica, settings_from_args

logger = logging.getLogger("stevedore.rayserve")

#: Where Serve runs its HTTP proxy: one address for the ingress (every node would need a port of its own here).
PROXY_LOCATION = "HeadOnly"


def build(args: dict[str, Any]) -> Application:
    """The application: a deployment for each installed model that ``load_models`` selects, and the ingress.

    ``args`` is ``{"settings": Settings.document()}``, which has no secrets: the ingress reads them from its
    environment. A plugin that fails to load gets no deployment; the ingress finds it again and reports it."""
    return build_with_secrets(args, {})


def build_with_secrets(args: dict[str, Any], secrets: dict[str, str]) -> Application:
    """``build``, with ``secrets`` (``STEVEDORE_*`` variables) set in the ingress's environment."""
    settings = settings_from_args(args)
    candidates, _, _ = startup.find(settings)
    models = {}
    for candidate in candidates:
        predictor = candidate.predictor
        if settings.loads_at_startup(predictor.name):
            name = deployment_name(predictor.name, predictor.version)
            deployment = serve.deployment(ModelReplica, name=name, **model_options(settings, predictor))
            models[name] = deployment.bind(args, predictor.name, predictor.version)
    options = ingress_options(settings)
    if secrets:
        options["ray_actor_options"] |= {"runtime_env": {"env_vars": secrets}}
    return serve.deployment(Ingress, name=INGRESS, **options).bind(args, models)


def deploy(settings: Settings, address: str) -> str:
    """Deploy the application on the Ray cluster at ``address``, its HTTP proxy on the settings' host and port;
    returns once every deployment is running (StartupError if one fails). The URL it serves."""
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port, "location": PROXY_LOCATION})
    application = build_with_secrets({"settings": settings.document()}, settings.secret_env())
    try:
        serve.run(application, name=APP_NAME, route_prefix="/")
    except Exception as error:  # Serve reports a failed deployment as RuntimeError with its replicas' errors
        raise StartupError(f"the application did not deploy: {error}") from error
    return f"http://{settings.host}:{settings.port}"
