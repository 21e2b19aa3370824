"""The pipelines' routes: their catalogue, their predict schema, and predict (``core.pipelines``).

``POST /pipelines/{name}/predict`` answers ``{"pipeline", "model_name", "predictions"}``, with each step's record
under ``steps`` when asked (``?steps=true``). The same API key scope as a model's predict (``infer``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base import tracing
from stevedore_server.base.errors import BadRequest, ModelFailure
from stevedore_server.base.serialization import dumps_result
from stevedore_server.core.pipelines import PipelineAnswer
from stevedore_server.frontends.auth import INFER

from .bodies import JSONBytesResponse, parse_json, read_json_text, server_of
from .routing import ApiRoute
from .watching import request_bound, while_connected

PIPELINE = "/pipelines/{name}"
#: ``?steps=`` values.
FLAGS = {"true": True, "1": True, "false": False, "0": False}


async def listing(request: Request) -> Response:
    """Every pipeline, with its state (ready, failed) and why."""
    pipelines = server_of(request).pipelines
    await pipelines.recheck()
    return JSONBytesResponse({"pipelines": pipelines.listing()})


async def detail(request: Request) -> Response:
    """One pipeline's entry: its nodes and steps, models, state and reason."""
    pipelines = server_of(request).pipelines
    await pipelines.recheck()
    return JSONBytesResponse(pipelines.describe(request.path_params["name"]))


async def predict_schema(request: Request) -> Response:
    """The pipeline's predict JSON Schema: its first step's."""
    return JSONBytesResponse(server_of(request).pipelines.predict_schema(request.path_params["name"]))


async def predict(request: Request) -> Response:
    """Run the pipeline on the body (validated by its first step)."""
    pipelines = server_of(request).pipelines
    name = request.path_params["name"]
    with_steps = steps_flag(request)
    bound = request_bound(request)
    await pipelines.ready(name)  # an unknown or failed pipeline is answered before its body is read
    body = await read_json_text(request)
    value = await parse_json(request, body)
    with tracing.span("pipeline", {"stevedore.pipeline": name}):
        answer = await while_connected(request, bound, pipelines.predict(name, value, len(body)))
    return JSONBytesResponse(encoded(answer, with_steps))


def encoded(answer: PipelineAnswer, with_steps: bool) -> bytes:
    """The answer as JSON. NaN or infinity, which JSON cannot carry, is the failure of the last model that
    answered (a 500), as a model's own predict has it: not a ``null`` the client cannot tell from an answer."""
    try:
        return dumps_result(answer.document(with_steps))
    except (TypeError, ValueError) as error:
        answered = [record for record in answer.steps if record.model is not None and record.error is None]
        last = answered[-1] if answered else None
        model, version = (last.model, last.model_version) if last else (answer.pipeline, None)
        raise ModelFailure(str(model), str(version or ""), "predict", error) from error


def steps_flag(request: Request) -> bool:
    value = request.query_params.get("steps", "false").lower()
    if value not in FLAGS:
        raise BadRequest(f"steps={value[:20]!r}: true or false")
    return FLAGS[value]


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/pipelines", listing, ["GET"], ["pipelines"], needs=INFER),
        ApiRoute(PIPELINE, detail, ["GET"], ["pipelines"], needs=INFER),
        ApiRoute(f"{PIPELINE}/schemas/predict", predict_schema, ["GET"], ["pipelines"], needs=INFER),
        ApiRoute(f"{PIPELINE}/predict", predict, ["POST"], ["inference"], needs=INFER),
    ]
