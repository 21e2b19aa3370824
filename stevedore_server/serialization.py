"""JSON in and out of the request path (orjson)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from .errors import BadRequest

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """Serialize a response; NumPy arrays and scalars are accepted as they are."""
    return orjson.dumps(value, option=_DUMP_OPTIONS)


def dumps_result(value: Any) -> bytes:
    """Serialize a model's output; NaN and infinity, which JSON cannot carry, are the model's error.

    orjson writes them as ``null``, so only an output with a ``null`` is searched.
    """
    data = dumps(value)
    if b"null" in data and has_non_finite(value):
        raise ValueError("the output holds NaN or infinity, which JSON cannot carry")
    return data


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
    if isinstance(value, np.generic):
        return value.dtype.kind in "fc" and not bool(np.isfinite(value))
    if isinstance(value, dict):
        return any(has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_non_finite(item) for item in value)
    return False


def loads(body: bytes) -> Any:
    """Parse a request body; malformed JSON is the client's error (400)."""
    if not body:
        raise BadRequest("request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
