"""The OpenAI-compatible routes in the OpenAPI document (``web.openapi`` builds it from the route table): their
own request bodies (``parameters``' schemas), the ``name`` or ``name:version`` a model is retrieved by, and
their errors in OpenAI's format (``error_format``) instead of the server's own."""

from __future__ import annotations

from typing import Any

from . import parameters
from .routes import PREFIXES

#: OpenAI's error body, as ``error_format`` writes it.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERRORS = {
    "400": "A body that is not JSON, or a wrong or unknown parameter (named in param)",
    "404": "No model of that name with the capability the route needs",
    "413": "Request body too large",
    "500": "The model failed; the message has an error id to find in the log",
    "503": "The model is full or not ready",
    "504": "The model's time-out or the request's deadline passed",
}
#: What names a model: ``name`` or ``name:version`` (``Predictor`` names and versions).
MODEL_ID = r"^[A-Za-z0-9._-]+(:[A-Za-z0-9._+-]+)?$"
#: Each route's request body, by path.
BODIES = {
    "/chat/completions": parameters.CHAT_SCHEMA,
    "/completions": parameters.COMPLETION_SCHEMA,
    "/embeddings": parameters.EMBEDDING_SCHEMA,
}


def documented(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document (``web.openapi``) with these routes' own request bodies and error format."""
    spec["components"]["schemas"]["OpenAIError"] = ERROR_SCHEMA
    for prefix in PREFIXES:
        for path, path_item in spec["paths"].items():
            if path.startswith(prefix + "/"):
                document(path.removeprefix(prefix), path_item)
    return spec


def document(path: str, path_item: dict[str, Any]) -> None:
    """One route's operations: OpenAI's errors, the model's pattern, the request body."""
    reference = {"$ref": "#/components/schemas/OpenAIError"}
    for operation in path_item.values():
        operation["responses"] = {key: value for key, value in operation["responses"].items() if key < "400"}
        for status, description in ERRORS.items():
            content = {"application/json": {"schema": reference}}
            operation["responses"][status] = {"description": description, "content": content}
    for parameter in path_item.get("get", {}).get("parameters", []):
        if parameter["name"] == "model":  # a name, or name:version
            parameter["schema"] = {"type": "string", "pattern": MODEL_ID}
    body = BODIES.get(path)
    if body is not None:
        path_item["post"]["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
