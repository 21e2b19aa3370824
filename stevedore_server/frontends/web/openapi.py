"""The OpenAPI document: every model's predict and score routes with its own schema and fixture."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

import jsonschema_rs
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from stevedore_server.base.version import __version__
from stevedore_server.core.served_models import Registry
from stevedore_server.core.serving import ServingModel

from .original_routes import MODEL_QUERY
from .routing import model_tag

logger = logging.getLogger("stevedore.openapi")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "error_id": {"type": "string"},
    },
}
TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {},
    },
}
INFERENCE_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": TENSOR},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_RESPONSES = {
    "400": "Malformed JSON or unsupported content",
    "404": "Unknown model or version",
    "413": "Request body too large",
    "422": "Payload does not match the model's schema",
    "500": "The model failed; the body has an error id to find in the log",
    "503": "The model is not ready",
}


def build_openapi(app: FastAPI, registry: Registry) -> dict[str, Any]:
    spec = get_openapi(
        title="stevedore-server",
        version=__version__,
        description="Every installed stevedore model, with health, catalogue, predict and score services.",
        routes=app.routes,
    )
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        spec["components"]["schemas"].pop(name, None)
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            _document_errors(operation)
    for path in ("/models/{name}/predict", "/models/{name}/versions/{version}/predict"):
        spec["paths"][path]["post"]["requestBody"] = _body({}, None)
    for path in ("/models/{name}/score", "/models/{name}/versions/{version}/score"):
        spec["paths"][path]["post"]["requestBody"] = _body({}, None)
    spec["components"]["schemas"]["InferenceRequest"] = INFERENCE_REQUEST
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        spec["paths"][path]["post"]["requestBody"] = _body({"$ref": "#/components/schemas/InferenceRequest"}, None)
    for model in registry.models:
        if model.ready:
            spec["paths"].update(model_paths(model, registry.get(model.name) is model))
    for path, path_item in spec["paths"].items():
        for operation in path_item.values():
            declare_path_parameters(path, operation)
    for path, required in MODEL_QUERY.items():
        parameter = {"name": "model", "in": "query", "required": required, "schema": {"type": "string"}}
        spec["paths"][path]["get"].setdefault("parameters", []).append(parameter)
    spec["paths"]["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus metrics",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return spec


def declare_path_parameters(path: str, operation: dict[str, Any]) -> None:
    """The handlers read their path parameters themselves, so FastAPI cannot see them: declare each."""
    declared = {parameter["name"] for parameter in operation.get("parameters", []) if parameter.get("in") == "path"}
    for name in re.findall(r"{(\w+)}", path):
        if name not in declared:
            operation.setdefault("parameters", []).append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )


def model_paths(entry: ServingModel, latest: bool) -> dict[str, Any]:
    """Concrete paths of one model; the plain ones too when it is the default version."""
    bases = [f"/models/{entry.name}/versions/{entry.version}"] + ([f"/models/{entry.name}"] if latest else [])
    paths: dict[str, Any] = {}
    for base in bases:
        paths[f"{base}/predict"] = {"post": _inference(entry, "predict", base)}
        if entry.loaded.score_validator is not None:
            paths[f"{base}/score"] = {
                "post": _inference(entry, "score", base),
                "get": _operation(entry, "score", base, "Score on the shipped score fixture", None, "get"),
            }
    return paths


def _inference(entry: ServingModel, kind: str, base: str) -> dict[str, Any]:
    loaded = entry.loaded
    validator = loaded.predict_validator if kind == "predict" else loaded.score_validator
    fixture = loaded.predict_fixture if kind == "predict" else loaded.score_fixture
    summary = f"{kind.capitalize()} with {entry.name} {entry.version}"
    body = _body(_inline(validator.schema if validator else {}), fixture)
    return _operation(entry, kind, base, summary, body, "post")


def _operation(
    entry: ServingModel, kind: str, base: str, summary: str, body: dict[str, Any] | None, method: str
) -> dict[str, Any]:
    field = "predictions" if kind == "predict" else "score"
    result = {
        "type": "object",
        "required": ["model_name", "model_version", field],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, field: {}},
    }
    operation: dict[str, Any] = {
        "tags": [model_tag(entry.name)],
        "summary": summary,
        "description": entry.predictor.description or "",
        "operationId": f"{method}_{kind}_{base}".replace("/", "_").replace(".", "_").replace("-", "_"),
        "responses": {
            "200": {"description": "Successful Response", "content": {"application/json": {"schema": result}}}
        },
    }
    if body is not None:
        operation["requestBody"] = body
    _document_errors(operation)
    return operation


def _body(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with local ``$ref`` resolved, since it is embedded in another document."""
    if "$ref" not in repr(schema):
        return schema
    try:
        return jsonschema_rs.dereference(copy.deepcopy(schema))
    except Exception as error:  # a recursive schema cannot be inlined; document the body as any JSON
        logger.warning("schema not shown in the OpenAPI document: %s", error)
        return {}


def _document_errors(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in ERROR_RESPONSES.items():
        responses[status] = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
