"""JSON Schema validation: one compiled validator per schema, error details as JSON pointers."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from .errors import InvalidPayload

#: Cap on the details returned for one invalid payload: a 10 000-row payload of
#: strings must not produce a 10 000-entry error body.
MAX_ERROR_DETAILS = 20
#: Cap on one message: the validator quotes the offending value, which may be the whole payload.
MAX_MESSAGE_LENGTH = 200


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
            message = error.message
            if len(message) > MAX_MESSAGE_LENGTH:
                message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
            details.append({"path": json_pointer(list(error.instance_path)), "message": message})
            if len(details) >= MAX_ERROR_DETAILS:
                break
        return details

    def validate(self, instance: Any, what: str = "payload") -> None:
        # is_valid is the fast path: error collection only runs for bad input.
        try:
            valid = self._compiled.is_valid(instance)
        except ValueError as error:  # a value no JSON document holds, such as bytes from a binary tensor
            raise InvalidPayload(f"{what} holds a value JSON Schema cannot check: {error}") from None
        if not valid:
            raise InvalidPayload(f"{what} does not match the model's schema", self.errors(instance))
