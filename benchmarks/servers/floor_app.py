"""The floor: the least a Python ASGI server can do to serve the model.

One POST route that does ``json.loads``, ``model.predict`` on a NumPy array and
``json.dumps``; no validation, logging or middleware. Started by the benchmark as

    FLOOR_MODEL=model.joblib uvicorn floor_app:create_app --factory --workers 1 \
        --loop uvloop --http httptools --no-access-log

  POST /predict   [[f1, f2, f3, f4], ...]  ->  {"predictions": [0, ...]}
  GET  /ready     200 (the model is loaded before the server accepts connections)
"""

from __future__ import annotations

import json
import os
from typing import Any

import joblib
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def predict_route(model: Any) -> Route:
    async def predict(request: Request) -> Response:
        rows = json.loads(await request.body())
        predictions = model.predict(np.asarray(rows, dtype=np.float64))
        return Response(json.dumps({"predictions": predictions.tolist()}), media_type="application/json")

    return Route("/predict", predict, methods=["POST"])


async def ready(request: Request) -> Response:
    return Response(b"ready")


def create_app() -> Starlette:
    model = joblib.load(os.environ["FLOOR_MODEL"])
    return Starlette(routes=[predict_route(model), Route("/ready", ready)])
