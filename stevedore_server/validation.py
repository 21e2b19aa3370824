"""JSON Schema validation: one compiled validator per schema, error details as JSON pointers."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from .errors import InvalidPayload

#: Cap on the details returned for one invalid payload: a 10 000-row payload of
#: strings must not produce a 10 000-entry error body.
MAX_ERROR_DETAILS = 20


def json_pointer(path: list[str | int]) -> str:
    """RFC 6901 pointer for a path of keys and indices ("" is the whole document)."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "".join("/" + part for part in escaped)


class SchemaValidator:
    """A JSON Schema compiled once; `validate` raises `InvalidPayload` with details."""

    def __init__(self, schema: dict[str, Any]) -> None:
        jsonschema_rs.meta.validate(schema)
        self.schema = schema
        self._compiled = jsonschema_rs.validator_for(schema)

    def is_valid(self, instance: Any) -> bool:
        return self._compiled.is_valid(instance)

    def errors(self, instance: Any) -> list[dict[str, str]]:
        details = []
        for error in self._compiled.iter_errors(instance):
            details.append({"path": json_pointer(list(error.instance_path)), "message": error.message})
            if len(details) >= MAX_ERROR_DETAILS:
                break
        return details

    def validate(self, instance: Any, what: str = "payload") -> None:
        # is_valid is the fast path: error collection only runs for bad input.
        if not self._compiled.is_valid(instance):
            raise InvalidPayload(f"{what} does not match the model's schema", self.errors(instance))
