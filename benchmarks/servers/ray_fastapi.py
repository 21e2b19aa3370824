"""The Ray Serve baseline: the benchmark's model as a team would serve it on Ray Serve by hand.

Serve's model-composition pattern, the topology of ``stevedore-server ray``:
the HTTP proxy, one replica of a FastAPI ingress deployment, which forwards the
rows through a DeploymentHandle to one replica of the model's deployment.

  POST /predict   [[f1, f2, f3, f4], ...]  ->  {"predictions": [0, ...]}
  GET  /ready     200 (once the application is running)

Deployed on a running cluster (``ray_head.py`` runs it with ``RAY_ADDRESS`` set):

    python ray_fastapi.py --model model.joblib --host 127.0.0.1 --port P [--model-max-ongoing-requests N]

Serve's defaults, except: the model replica reserves one CPU, and the ingress
has the options ``stevedore-server ray`` gives its own (one replica, no CPU
reserved, 1000 requests at once, 30 s to shut down). The model deployment
takes Serve's default ``max_ongoing_requests`` (5) unless told otherwise.

The deployments are defined at module level, as Serve's documentation writes
them: this script runs as ``__main__``, so Serve ships them to the replicas by
value, and the replicas need not import it.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import joblib
import numpy as np
import ray
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

app = FastAPI()


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
class IrisModel:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    def predict(self, rows: list[list[float]]) -> list[int]:
        predictions: list[int] = self.model.predict(np.asarray(rows, dtype=np.float64)).tolist()
        return predictions


@serve.deployment(
    num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000, graceful_shutdown_timeout_s=30
)
@serve.ingress(app)
class Ingress:
    def __init__(self, model: DeploymentHandle) -> None:
        self.model = model

    @app.post("/predict")
    async def predict(self, rows: list[list[float]]) -> dict[str, list[int]]:
        return {"predictions": await self.model.predict.remote(rows)}

    @app.get("/ready")
    async def ready(self) -> str:
        return "ready"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True, help="the exported model.joblib")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-max-ongoing-requests", type=int, help="the model deployment's (Serve's default: 5)")
    args = parser.parse_args()
    ray.init(logging_level=logging.WARNING, log_to_driver=False)  # the cluster at RAY_ADDRESS
    serve.start(http_options={"host": args.host, "port": args.port, "location": "HeadOnly"})
    # mypy keeps a decorated class's own type: it does not see the Deployment that serve.deployment made of it.
    model: Any = IrisModel
    if args.model_max_ongoing_requests is not None:
        model = model.options(max_ongoing_requests=args.model_max_ongoing_requests)
    application = Ingress.bind(model.bind(args.model))  # type: ignore[attr-defined]
    serve.run(application, name="iris", route_prefix="/")


if __name__ == "__main__":
    main()
