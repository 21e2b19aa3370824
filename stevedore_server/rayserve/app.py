"""The Serve application of the installed plugins (``build``, which Serve imports from a config file), and
deploying it on a running cluster (``deploy``, for ``stevedore-server ray``)."""

from __future__ import annotations

import logging
import os
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
    MULTIPLEXED,
    SECRETS_FILE,
    application_args,
    deployment_name,
    grpc_options,
    ingress_options,
    model_options,
    multiplexed_options,
    secrets_directory,
    settings_from_args,
    write_secrets,
)
from .ingress import Ingress
from .live import LIVE_PREFIX
from .multiplexed import MultiplexedReplica
from .replica import ModelReplica

logger = logging.getLogger("stevedore.rayserve")

#: The deployments' runtime environment (the driver's is theirs, and the ingress's that of those it deploys
#: later, ``live``): our replicas' code is async and never blocks its event loop, so Serve runs it on the
#: replica's own loop, and the ingress's calls to the models' handles from that loop too, instead of a thread and
#: a loop of their own each: two hand-offs between threads a request fewer (0.85x the tuned baseline at one row
#: and 32 connections with them, 1.12x without: benchmarks/README.md, issue 28). As
#: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` sets them; the variables of the command's environment win.
RUNTIME_ENV = {
    "env_vars": {
        name: os.environ.get(name, "0")
        for name in ("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP")
    }
}
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
    lazy = []
    for candidate in candidates:
        predictor = candidate.predictor
        if settings.loads_lazily(predictor.name):
            lazy.append(predictor)
        elif settings.loads_at_startup(predictor.name):
            name = deployment_name(predictor.name, predictor.version)
            deployment = serve.deployment(ModelReplica, name=name, **model_options(settings, predictor))
            models[name] = deployment.bind(model_args, predictor.name, predictor.version)
    if lazy:  # one deployment serves them all, each replica holding a few (``multiplexed``)
        options = multiplexed_options(settings, lazy)
        models[MULTIPLEXED] = serve.deployment(MultiplexedReplica, name=MULTIPLEXED, **options).bind(model_args)
    options = ingress_options(settings, ingress_node)
    return serve.deployment(Ingress, name=INGRESS, **options).bind(args, models)


def deploy(settings: Settings, address: str) -> str:
    """Deploy the application on the Ray cluster at ``address``, its HTTP proxy on the settings' host and port;
    returns once every deployment is running (StartupError if one fails). The URL it serves.

    The secrets go into a file on this node (``config.write_secrets``), and the ingress runs here to read it."""
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, runtime_env=RUNTIME_ENV)
    warn_if_open(settings)
    serve.start(
        http_options={"host": settings.host, "port": settings.port, "location": PROXY_LOCATION},
        grpc_options=grpc_options(settings) if settings.grpc_port else None,  # 0: no gRPC
    )
    secrets = settings.secret_env()
    path = write_secrets(secrets, secrets_directory(settings)) if secrets else None
    app = build_on(application_args(settings, path), this_node() if path else None)
    # Before, not after: the new ingress's lifespan deploys the trained versions' applications again before
    # ``serve.run`` returns, and they must stay.
    remove_loaded()
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except Exception as error:  # Serve reports a failed deployment as RuntimeError with its replicas' errors
        raise StartupError(f"the application did not deploy: {error}") from error
    return f"http://{settings.host}:{settings.port}"


def remove_loaded() -> None:
    """Delete the applications that the application deployed before added (``live``: its loads, and the versions
    its trainings made): the new ingress serves what its settings say, and deploys the trained versions it serves
    again itself. Until it runs, the ingress before it no longer serves them."""
    for name in serve.status().applications:
        if name.startswith(LIVE_PREFIX):
            logger.warning("removing application %s, which the application deployed before added", name)
            serve.delete(name)


def this_node() -> str:
    """The resource of this driver's node, ``node:<address>``, which Ray gives every node (and only nodes at
    that address have)."""
    node_id = ray.get_runtime_context().get_node_id()
    address = next((node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id), None)
    if address is None:
        raise StartupError(f"this node ({node_id}) is not among the cluster's nodes: run on a node of the cluster")
    return f"node:{address}"
