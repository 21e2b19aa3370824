"""The stevedore API: health, catalogue, schemas, predict and score."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from stevedore_server.base import tracing
from stevedore_server.core.inference import Action, JSONText, JSONValue
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel
from stevedore_server.frontends.auth import INFER
from stevedore_server.frontends.payload_notes import from_json, from_value, note_request, note_response

from .bodies import (
    JSONBytesResponse,
    anonymous,
    check_readiness,
    health_report,
    json_result,
    model_ref,
    read_json_text,
    served_by,
    server_of,
)
from .routing import ApiRoute
from .streaming import predict_stream
from .watching import request_bound, while_connected

MODEL = "/models/{name}"
VERSIONED = "/models/{name}/versions/{version}"


def addressed_model(request: Request) -> ServingModel:
    """The model the path names, served or not (a traffic name's heaviest variant); 404 if there is none."""
    server = server_of(request)
    ref = server.inference.standing_for(model_ref(request))
    return server.registry.get(ref.name, ref.version)


# -- health ---------------------------------------------------------------


async def livez(request: Request) -> Response:
    """200 while the process serves requests."""
    return JSONBytesResponse({"status": "live"})


async def readyz(request: Request) -> Response:
    """200 when every selected model is loaded and self-tested and every health check passes, else 503 with the
    reasons (not to a caller without a key when keys are on: reasons name models, files and errors)."""
    reasons = await check_readiness(request)
    body = {"ready": not reasons} if anonymous(request) else {"ready": not reasons, "reasons": reasons}
    return JSONBytesResponse(body, status_code=503 if reasons else 200)


async def healthz(request: Request) -> Response:
    """The full report: each model's state and reason, each plugin failure, each check, uptime; its status
    alone to a caller without a key when keys are on."""
    report = await health_document(request)
    status_code = 200 if report["status"] == "ok" else 503
    return JSONBytesResponse({"status": report["status"]} if anonymous(request) else report, status_code=status_code)


async def health_document(request: Request) -> dict[str, Any]:
    """What ``/healthz`` answers (the web console shows it too)."""
    registry = server_of(request).registry
    checks = await health_report(request)
    ok = all(result["ok"] for result in checks.values())
    return {
        "status": "ok" if ok else "failing",
        "uptime": registry.uptime(),
        "models": [
            {"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in registry.models
        ],
        "failed_plugins": [failure.as_dict() for failure in registry.plugin_failures],
        "checks": checks,
    }


# -- catalogue --------------------------------------------------------------


def model_links(model: ServingModel) -> dict[str, str]:
    base = f"/models/{model.name}/versions/{model.version}"
    links = {"self": base, "ready": f"{base}/ready", "predict": f"{base}/predict"}
    links["predict_schema"] = f"{base}/schemas/predict"
    if model.signature is not None:
        links["v2_infer"] = f"/v2/models/{model.name}/versions/{model.version}/infer"
    if model.predictor.has_score:
        links |= {"score": f"{base}/score", "score_schema": f"{base}/schemas/score"}
    return links


def catalogue_entry(registry: Registry, model: ServingModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "versions": [other.version for other in registry.versions_of(model.name)],
        "created": model.loaded.created,
        "ready": model.ready,
        "state": model.state,
        "reason": model.reason,
        "description": model.predictor.description,
        "has_score": model.predictor.has_score,
        "links": model_links(model),
        "metadata": dict(model.metadata),
        "v2": v2_interface(model),
    }


def v2_interface(model: ServingModel) -> dict[str, Any]:
    """The model's Open Inference Protocol tensors, or why it has none."""
    if model.signature is None:
        return {"available": False, "reason": model.no_tensor_reason}
    return {
        "available": True,
        "inputs": [spec.as_dict() for spec in model.signature.inputs],
        "outputs": [spec.as_dict() for spec in model.signature.outputs],
    }


async def catalogue(request: Request) -> Response:
    """Every served or failed model, and the plugins that failed before giving a model."""
    return JSONBytesResponse(catalogue_document(server_of(request).registry))


def catalogue_document(registry: Registry) -> dict[str, Any]:
    """What ``/models`` answers (the web console shows it too)."""
    return {
        "models": [catalogue_entry(registry, model) for model in registry.models],
        "failed_plugins": [failure.as_dict() for failure in registry.plugin_failures],
    }


async def model_detail(request: Request) -> Response:
    """One model's catalogue entry (its default version unless a version is in the path)."""
    return JSONBytesResponse(catalogue_entry(server_of(request).registry, addressed_model(request)))


async def model_ready(request: Request) -> Response:
    """200 when this model is loaded and self-tested, else 503 with the reason (its version and reason not to a
    caller without a key when keys are on)."""
    model = addressed_model(request)
    body = {"name": model.name, "ready": model.ready}
    if not anonymous(request):
        body |= {"version": model.version, "reason": model.reason}
    return JSONBytesResponse(body, status_code=200 if model.ready else 503)


async def predict_schema(request: Request) -> Response:
    """The model's predict JSON Schema."""
    return JSONBytesResponse(addressed_model(request).schema("predict"))


async def score_schema(request: Request) -> Response:
    """The model's score JSON Schema (404 when the model has no score service)."""
    return JSONBytesResponse(addressed_model(request).schema("score"))


# -- inference --------------------------------------------------------------


async def predict(request: Request) -> Response:
    """Validate the body against the predict schema and return the model's predictions."""
    server = server_of(request)
    ref = model_ref(request)
    bound = request_bound(request)
    # An unknown, unready or full model is answered before its body is read.
    model = await server.inference.admit(ref, Action.PREDICT, bound.deadline)
    body = await read_json_text(request)
    note_request(request.scope, server, model, from_json, body)
    answer = await while_connected(request, bound, server.inference.call(ref, Action.PREDICT, JSONText(body)))
    model = answer.model
    with tracing.span("encode"):
        predictions = json_result(answer, Action.PREDICT)
        answered = {"model_name": model.name, "model_version": model.version, "predictions": predictions}
        response = JSONBytesResponse(answered, headers=served_by(model))
    note_response(request.scope, from_json, response.body, model=model)
    return response


async def score(request: Request) -> Response:
    """Score the model on a labelled body (POST) or on its shipped score fixture (GET)."""
    server = server_of(request)
    inference = server.inference
    ref = model_ref(request)
    bound = request_bound(request)
    model = await inference.admit(ref, Action.SCORE, bound.deadline)  # answered before its body is read if unable
    if request.method == "POST":
        body = await read_json_text(request)
        note_request(request.scope, server, model, from_json, body)
        payload: JSONText | JSONValue = JSONText(body)
    else:
        note_request(request.scope, server, model, from_value, None)  # no body: the shipped score fixture
        payload = JSONValue(model.loaded.score_fixture)
    answer = await while_connected(request, bound, inference.call(ref, Action.SCORE, payload))
    model = answer.model
    result = json_result(answer, Action.SCORE)
    answered = {"model_name": model.name, "model_version": model.version, "score": result}
    response = JSONBytesResponse(answered, headers=served_by(model))
    note_response(request.scope, from_json, response.body, model=model)
    return response


def predict_routes() -> list[BaseRoute]:
    """The predict routes, which the app matches first: Starlette tries routes in order, and each miss costs."""
    return [ApiRoute(f"{base}/predict", predict, ["POST"], ["inference"], needs=INFER) for base in (MODEL, VERSIONED)]


def stream_routes() -> list[BaseRoute]:
    """The streamed predict routes (Server-Sent Events, ``streaming``)."""
    return [
        ApiRoute(f"{base}/predict/stream", predict_stream, ["POST"], ["inference"], needs=INFER)
        for base in (MODEL, VERSIONED)
    ]


def routes() -> list[BaseRoute]:
    """Every other stevedore route; model routes under both the plain and the versioned path."""
    table: list[BaseRoute] = [
        ApiRoute(path, handler, ["GET"], ["health"], needs=None) for path, handler in HEALTH_ROUTES.items()
    ]
    table.append(ApiRoute("/models", catalogue, ["GET"], ["catalogue"], needs=INFER))
    for base in (MODEL, VERSIONED):
        table += [
            ApiRoute(base, model_detail, ["GET"], ["catalogue"], needs=INFER),
            ApiRoute(f"{base}/ready", model_ready, ["GET"], ["health"], needs=None),
            ApiRoute(f"{base}/schemas/predict", predict_schema, ["GET"], ["catalogue"], needs=INFER),
            ApiRoute(f"{base}/schemas/score", score_schema, ["GET"], ["catalogue"], needs=INFER),
            ApiRoute(f"{base}/score", score, ["GET", "POST"], ["inference"], needs=INFER),
        ]
    return table


HEALTH_ROUTES = {"/livez": livez, "/readyz": readyz, "/healthz": healthz}
