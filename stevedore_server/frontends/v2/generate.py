"""The Open Inference Protocol's generate extension (KServe, Triton): ``generate`` and ``generate_stream``.

    POST /v2/models/{name}[/versions/{v}]/generate          {"text_input": ..., "parameters": {...}}
    POST /v2/models/{name}[/versions/{v}]/generate_stream   the same, answered as Server-Sent Events

The request is a JSON object whose keys (other than ``id`` and ``parameters``)
are the model's inputs by name: one input's value is the predict payload,
several form an object keyed by input name, as the stevedore route takes it.
The answer names the model and holds each output by name (the model's tensor
outputs: a model with several returns a dict of them). ``generate`` runs
predict; ``generate_stream`` runs ``predict_stream``, one event an item, and
ends the stream after the last (an error is an event ``{"error": ...}``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stevedore_server.base.errors import BadRequest, ClientError, ModelFailure
from stevedore_server.base.serialization import dumps, loads
from stevedore_server.core.deadlines import bounded
from stevedore_server.core.inference import Action, JSONValue
from stevedore_server.core.serving import ServingModel
from stevedore_server.core.signature import DEFAULT_OUTPUT
from stevedore_server.frontends.payload_notes import from_json, note_request, note_response
from stevedore_server.frontends.web.bodies import model_ref, read_body, server_of
from stevedore_server.frontends.web.streaming import EventFormat, error_body, event, stream_response
from stevedore_server.frontends.web.watching import request_bound, while_connected

#: Keys of a generate request that are not inputs.
NOT_INPUTS = frozenset({"id", "parameters"})


async def generate(request: Request) -> Response:
    """One prediction, its outputs by name."""
    inference = server_of(request).inference
    bound = request_bound(request)
    model = await inference.admit(model_ref(request), Action.PREDICT, bound.deadline)  # before the body is read
    payload = await generate_payload(request, model)
    answer = await while_connected(
        request, bound, inference.call(model_ref(request), Action.PREDICT, JSONValue(payload))
    )
    try:
        content = dumps(answer_body(answer.model, answer.result))
    except (TypeError, ValueError) as error:
        raise ModelFailure(model.name, model.version, "predict", error) from error
    note_response(request.scope, from_json, content, model=answer.model)
    return Response(content, media_type="application/json")


async def generate_stream(request: Request) -> Response:
    """The model's ``predict_stream`` as Server-Sent Events of outputs by name."""
    ref = model_ref(request)
    bound = request_bound(request)
    model = await server_of(request).inference.admit(ref, Action.PREDICT, bound.deadline)  # before the body is read
    payload = JSONValue(await generate_payload(request, model))
    with bounded(bound):  # its stream keeps it (``Admission.reserve``)
        return await stream_response(request, ref, payload, GENERATE_EVENTS)


async def generate_payload(request: Request, model: ServingModel) -> Any:
    """The predict payload of a generate request (for ``model``): BadRequest for one that is not an object of
    inputs."""
    text = await read_body(request)
    note_request(request.scope, server_of(request), model, from_json, text)
    body = loads(text, server_of(request).settings.max_json_depth)
    if not isinstance(body, dict):
        raise BadRequest("a generate request must be a JSON object of inputs by name")
    inputs = {name: value for name, value in body.items() if name not in NOT_INPUTS}
    if not inputs:
        raise BadRequest("a generate request needs at least one input")
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def answer_body(model: ServingModel, result: Any) -> dict[str, Any]:
    """The model's name and version and its outputs by name."""
    names = [spec.name for spec in model.signature.outputs] if model.signature else [DEFAULT_OUTPUT]
    outputs = result if len(names) > 1 and isinstance(result, dict) else {names[0]: result}
    return {"model_name": model.name, "model_version": model.version, **outputs}


def error_event(error: ClientError | ModelFailure) -> bytes:
    body = {"error": error.summary()} if isinstance(error, ClientError) else error_body(error)
    return event(body)


#: Triton's generate_stream: an event an answer, an error as ``{"error": ...}``, no end event.
GENERATE_EVENTS = EventFormat(
    item=lambda model, item: event(answer_body(model, item)), end=lambda model: b"", error=error_event, data=answer_body
)
