"""A model's deployment added to the running cluster, and removed: the repository's load and unload on Ray
(``forwarding.DeploymentRepository``).

The application's own deployments are its ingress's arguments: Serve cannot add
one to a running application, or take one out, without deploying the whole
application again, ingress included, which would drop the requests in flight.
So a model loaded later gets an application of its own, ``stevedore.NAME:VERSION``
(no route: only the ingress calls it), its deployment made as the application
makes each model's (``config.model_options``); unloading it deletes that
application, and its replicas stop.
"""

from __future__ import annotations

import functools
import logging

from anyio import to_thread
from ray import serve
from ray.serve.handle import DeploymentHandle

from stevedore_server.base.errors import BadRequest
from stevedore_server.base.settings import Settings
from stevedore_server.predictor import Predictor

from .config import APP_NAME, deployment_name, model_options
from .replica import ModelReplica

logger = logging.getLogger("stevedore.rayserve")


#: What the name of an application of a deployment added live begins with.
LIVE_PREFIX = f"{APP_NAME}."


def application_name(deployment: str) -> str:
    """The application of a deployment added live: ``stevedore.iris:1``."""
    return f"{LIVE_PREFIX}{deployment}"


async def deploy(settings: Settings, model_args: dict[str, object], predictor: Predictor) -> DeploymentHandle:
    """Deploy the model's deployment in an application of its own, and wait until it runs; its handle.
    BadRequest with Serve's reason if it does not deploy (nothing is left of it)."""
    name = deployment_name(predictor.name, predictor.version)
    deployment = serve.deployment(ModelReplica, name=name, **model_options(settings, predictor))
    application = deployment.bind(model_args, predictor.name, predictor.version)
    run = functools.partial(serve.run, application, name=application_name(name), route_prefix=None)
    try:
        await to_thread.run_sync(run)  # blocks until the replicas run, or raises with their errors
    except Exception as error:
        logger.error("model %s version %s: its deployment failed: %s", predictor.name, predictor.version, error)
        await remove(name)
        raise BadRequest(f"model {predictor.name!r} version {predictor.version!r} did not deploy: {error}") from None
    logger.info("model %s version %s: deployed as application %s", predictor.name, predictor.version,
                application_name(name))  # fmt: skip
    return serve.get_deployment_handle(name, app_name=application_name(name))


async def remove(deployment: str) -> None:
    """Delete the application of a deployment added live (its replicas stop); waits until it is gone."""
    await to_thread.run_sync(serve.delete, application_name(deployment))
    logger.info("deployment %s removed (application %s deleted)", deployment, application_name(deployment))
