"""The stevedore API: health, catalogue, schemas, predict and score."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from .errors import NotFound
from .health import run_checks
from .http import (
    JSONBytesResponse,
    addressed_entry,
    check_readiness,
    parse_json,
    read_json,
    read_json_text,
    ready_entry,
    registry_of,
    run_model,
)
from .registry import ModelEntry, Registry
from .routing import RouteTable

MODEL = "/models/{name}"
VERSIONED = "/models/{name}/versions/{version}"


# -- health ---------------------------------------------------------------


async def livez(request: Request) -> Response:
    """200 while the process serves requests."""
    return JSONBytesResponse({"status": "live"})


async def readyz(request: Request) -> Response:
    """200 when every selected model is loaded and self-tested and every health check passes, else 503."""
    reasons = await check_readiness(request)
    return JSONBytesResponse({"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200)


async def healthz(request: Request) -> Response:
    """The full report: each model's state and reason, each plugin failure, each check, uptime."""
    registry = registry_of(request)
    checks = await to_thread.run_sync(run_checks, registry, limiter=request.state.check_threads)
    ok = all(result["ok"] for result in checks.values())
    report = {
        "status": "ok" if ok else "failing",
        "uptime": registry.uptime(),
        "models": [
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason} for e in registry.entries
        ],
        "failed_plugins": [failure.as_dict() for failure in registry.plugin_failures],
        "checks": checks,
    }
    return JSONBytesResponse(report, status_code=200 if ok else 503)


# -- catalogue --------------------------------------------------------------


def model_links(entry: ModelEntry) -> dict[str, str]:
    base = f"/models/{entry.name}/versions/{entry.version}"
    links = {"self": base, "ready": f"{base}/ready", "predict": f"{base}/predict"}
    links["predict_schema"] = f"{base}/schemas/predict"
    if entry.signature is not None:
        links["v2_infer"] = f"/v2/models/{entry.name}/versions/{entry.version}/infer"
    if entry.predictor.has_score:
        links |= {"score": f"{base}/score", "score_schema": f"{base}/schemas/score"}
    return links


def catalogue_entry(registry: Registry, entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "version": entry.version,
        "versions": [other.version for other in registry.versions_of(entry.name)],
        "created": entry.created,
        "ready": entry.ready,
        "state": entry.state,
        "reason": entry.reason,
        "description": entry.predictor.description,
        "has_score": entry.predictor.has_score,
        "links": model_links(entry),
        "metadata": entry.metadata,
        "v2": v2_interface(entry),
    }


def v2_interface(entry: ModelEntry) -> dict[str, Any]:
    """The model's Open Inference Protocol tensors, or why it has none."""
    if entry.signature is None:
        return {"available": False, "reason": entry.no_tensor_reason}
    return {
        "available": True,
        "inputs": [spec.as_dict() for spec in entry.signature.inputs],
        "outputs": [spec.as_dict() for spec in entry.signature.outputs],
    }


async def catalogue(request: Request) -> Response:
    """Every served or failed model, and the plugins that failed before giving a model."""
    registry = registry_of(request)
    return JSONBytesResponse(
        {
            "models": [catalogue_entry(registry, entry) for entry in registry.entries],
            "failed_plugins": [failure.as_dict() for failure in registry.plugin_failures],
        }
    )


async def model_detail(request: Request) -> Response:
    """One model's catalogue entry (the highest version unless a version is in the path)."""
    return JSONBytesResponse(catalogue_entry(registry_of(request), addressed_entry(request)))


async def model_ready(request: Request) -> Response:
    """200 when this model is loaded and self-tested, else 503 with the reason."""
    entry = addressed_entry(request)
    body = {"name": entry.name, "version": entry.version, "ready": entry.ready, "reason": entry.reason}
    return JSONBytesResponse(body, status_code=200 if entry.ready else 503)


async def predict_schema(request: Request) -> Response:
    """The model's predict JSON Schema."""
    return JSONBytesResponse(addressed_entry(request).schema("predict"))


async def score_schema(request: Request) -> Response:
    """The model's score JSON Schema (404 when the model has no score service)."""
    return JSONBytesResponse(addressed_entry(request).schema("score"))


# -- inference --------------------------------------------------------------


async def predict(request: Request) -> Response:
    """Validate the body against the predict schema and return the model's predictions."""
    entry = ready_entry(request)
    body = await read_json_text(request)
    table = entry.parsed_table(body)
    if table is not None:
        predictions = await run_model(entry, "predict", table, valid=True)
    else:
        payload, valid = entry.prevalidated(body, await parse_json(request, body))
        predictions = await run_model(entry, "predict", payload, valid)
    return JSONBytesResponse({"model_name": entry.name, "model_version": entry.version, "predictions": predictions})


async def score(request: Request) -> Response:
    """Score the model on a labelled body (POST) or on its shipped score fixture (GET)."""
    entry = ready_entry(request)
    if not entry.predictor.has_score:
        raise NotFound(f"model {entry.name!r} version {entry.version!r} has no score service")
    payload = await read_json(request) if request.method == "POST" else entry.score_fixture
    result = await run_model(entry, "score", payload)
    return JSONBytesResponse({"model_name": entry.name, "model_version": entry.version, "score": result})


def add_routes(routes: RouteTable) -> None:
    """Register every stevedore route; model routes under both the plain and the versioned path."""
    for path, handler in (("/livez", livez), ("/readyz", readyz), ("/healthz", healthz)):
        routes.add(path, handler, ["GET"], tags=["health"])
    routes.add("/models", catalogue, ["GET"], tags=["catalogue"])
    for base in (MODEL, VERSIONED):
        routes.add(base, model_detail, ["GET"], tags=["catalogue"])
        routes.add(f"{base}/ready", model_ready, ["GET"], tags=["health"])
        routes.add(f"{base}/schemas/predict", predict_schema, ["GET"], tags=["catalogue"])
        routes.add(f"{base}/schemas/score", score_schema, ["GET"], tags=["catalogue"])
        routes.add(f"{base}/predict", predict, ["POST"], tags=["inference"], hot=True)
        routes.add(f"{base}/score", score, ["GET", "POST"], tags=["inference"])
