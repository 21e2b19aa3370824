"""JSON in and out of the request path (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import BadRequest

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """Serialize a response; NumPy arrays and scalars are accepted as they are."""
    return orjson.dumps(value, option=_DUMP_OPTIONS)


def loads(body: bytes) -> Any:
    """Parse a request body; malformed JSON is the client's error (400)."""
    if not body:
        raise BadRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
