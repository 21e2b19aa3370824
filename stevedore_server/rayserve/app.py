"""The Serve application of the installed plugins (``build``, which Serve imports from a config file), and
deploying it on a running cluster (``deploy``, for ``stevedore-server ray``)."""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from stevedore_server.base.errors import StartupError
from stevedore_server.base.exposure import warn_if_open
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup

from .config import (
    APP_NAME,
    INGRESS,
    SECRETS_FILE,
    application_args,
    deployment_name,
    ingress_options,
    model_options,
    secrets_directory,
    settings_from_args,
    write_secrets,
)
from .ingress import Ingress
from .replica import ModelReplica

logger = logging.getLogger("stevedore.rayserve")

#: Where Serve runs its HTTP proxy: one address for the ingress (every node would need a port of its own here).
PROXY_LOCATION = "HeadOnly"


def build(args: dict[str, Any]) -> Application:
    """The application: a deployment for each installed model that ``load_models`` selects, and the ingress.

    ``args`` are ``config.application_args``: the settings without secrets, and maybe the path of the file the
    ingress reads them from. A plugin that fails to load gets no deployment; the ingress finds it again and
    reports it."""
    return build_on(args)


def build_on(args: dict[str, Any], ingress_node: str | None = None) -> Application:
    """``build``, the ingress on ``ingress_node`` (a node's own resource) if one is named."""
    settings = settings_from_args(args)
    model_args = {key: value for key, value in args.items() if key != SECRETS_FILE}  # for the ingress only
    candidates, _, _ = startup.find(settings)
    models = {}
    for candidate in candidates:
        predictor = candidate.predictor
        if settings.loads_at_startup(predictor.name):
            name = deployment_name(predictor.name, predictor.version)
            deployment = serve.deployment(ModelReplica, name=name, **model_options(settings, predictor))
            models[name] = deployment.bind(model_args, predictor.name, predictor.version)
    options = ingress_options(settings, ingress_node)
    return serve.deployment(Ingress, name=INGRESS, **options).bind(args, models)


def deploy(settings: Settings, address: str) -> str:
    """Deploy the application on the Ray cluster at ``address``, its HTTP proxy on the settings' host and port;
    returns once every deployment is running (StartupError if one fails). The URL it serves.

    The secrets go into a file on this node (``config.write_secrets``), and the ingress runs here to read it."""
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    warn_if_open(settings)
    serve.start(http_options={"host": settings.host, "port": settings.port, "location": PROXY_LOCATION})
    secrets = settings.secret_env()
    path = write_secrets(secrets, secrets_directory(settings)) if secrets else None
    app = build_on(application_args(settings, path), this_node() if path else None)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except Exception as error:  # Serve reports a failed deployment as RuntimeError with its replicas' errors
        raise StartupError(f"the application did not deploy: {error}") from error
    return f"http://{settings.host}:{settings.port}"


def this_node() -> str:
    """The resource of this driver's node, ``node:<address>``, which Ray gives every node (and only nodes at
    that address have)."""
    node_id = ray.get_runtime_context().get_node_id()
    address = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id), None)
    if address is None:
        raise StartupError(f"this node ({node_id}) is not among the cluster's nodes: run on a node of the cluster")
    return f"node:{address}"
