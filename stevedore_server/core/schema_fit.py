"""Whether what one model gives fits what the next takes: a structural check of two JSON Schemas.

``accepts(output_schema, predict_schema)`` says why an output of the first schema may fail the second, or None.
It compares what both state of ``type`` (an integer fits a number), ``items`` (of an array), ``required`` and
``properties`` (of an object), and ``additionalProperties: false``; nothing else. Its limits: ``$ref``,
``anyOf``/``oneOf``/``allOf``, ``enum``/``const``, bounds (``minimum``, ``minItems``...), formats and patterns
are not compared (a schema that uses them may still pass this check and fail at the first request, which the
pipeline's self-test on its fixture then catches where the fixture shows it). A schema stating nothing of a
keyword accepts whatever the other says of it.
"""

from __future__ import annotations

from typing import Any


def accepts(given: Any, taken: Any, where: str = "") -> str | None:
    """Why a value of schema ``given`` may not match schema ``taken`` (at ``where``, a JSON pointer), or None."""
    if not isinstance(given, dict) or not isinstance(taken, dict):
        return None
    given_types, taken_types = types_of(given), types_of(taken)
    if given_types and taken_types:
        extra = sorted(kind for kind in given_types if not fits(kind, taken_types))
        if extra:
            return f"at {where or '/'} it gives {' or '.join(extra)}, the next takes {' or '.join(sorted(taken_types))}"
    problem = accepts(given.get("items"), taken.get("items"), f"{where}/items")
    if problem is not None:
        return problem
    return object_problem(given, taken, where)


def object_problem(given: dict[str, Any], taken: dict[str, Any], where: str) -> str | None:
    """An object's keys: each the next requires given for sure, each given allowed, each in common fitting."""
    given_properties = properties_of(given)
    taken_properties = properties_of(taken)
    states_keys = "object" in types_of(given) or bool(given_properties)
    missing = [key for key in taken.get("required", []) if key not in given.get("required", [])]
    if missing and states_keys:
        return f"at {where or '/'} the next requires {', '.join(map(repr, missing))}, which it may not give"
    if taken.get("additionalProperties") is False and states_keys:
        extra = [key for key in given_properties if key not in taken_properties]
        if extra:
            return f"at {where or '/'} it gives {', '.join(map(repr, extra))}, which the next does not allow"
    for key, schema in taken_properties.items():
        if key in given_properties:
            problem = accepts(given_properties[key], schema, f"{where}/{key}")
            if problem is not None:
                return problem
    return None


def properties_of(schema: dict[str, Any]) -> dict[str, Any]:
    found = schema.get("properties")
    return found if isinstance(found, dict) else {}


def types_of(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {item for item in kind if isinstance(item, str)}
    return set()


def fits(kind: str, allowed: set[str]) -> bool:
    return kind in allowed or (kind == "integer" and "number" in allowed)
