"""JSON Schema validation: one compiled validator per schema, error details as JSON pointers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import numpy as np
import orjson

from .errors import InvalidPayload

#: Cap on the details returned for one invalid payload: a 10 000-row payload of
#: strings must not produce a 10 000-entry error body.
MAX_ERROR_DETAILS = 20
#: Cap on one message: the validator quotes the offending value, which may be the whole payload.
MAX_MESSAGE_LENGTH = 200
#: Cap on the row a hint shows wrapped, as JSON text.
SHOWN_ROW_LENGTH = 60


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
        items = schema.get("items") if schema.get("type") == "array" else None
        #: The type of one row ("array", "object") where the schema wants a list of them, else None.
        self.row_type = items.get("type") if isinstance(items, dict) else None

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
            message = f"{what} does not match the model's schema{self.rows_hint(instance)}"
            raise InvalidPayload(message, self.errors(instance))

    def rows_hint(self, instance: Any) -> str:
        """ "; send rows: wrap it in a list, [[5.1, 3.5, 1.4, 0.2]]" where ``instance`` is one row sent as the
        rows the schema wants (a list of numbers for rows that are arrays, an object for rows that are objects)."""
        flat_row = (
            isinstance(instance, list) and bool(instance) and not any(isinstance(v, list | dict) for v in instance)
        )
        one_object = isinstance(instance, dict)
        if not ((self.row_type == "array" and flat_row) or (self.row_type == "object" and one_object)):
            return ""
        shown = json.dumps(instance)  # with blanks after commas, as a person writes it
        if len(shown) > SHOWN_ROW_LENGTH:
            shown = shown[: SHOWN_ROW_LENGTH - 4] + " ..." + shown[-1]
        return f"; send rows: wrap it in a list, [{shown}]"


#: Keywords that say nothing about validity.
ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "examples", "$comment", "default"})
ARRAY_KEYWORDS = frozenset({"type", "items", "minItems", "maxItems"}) | ANNOTATIONS
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
LEAF_KEYWORDS = frozenset({"type", *BOUNDS}) | ANNOTATIONS
#: Beyond this magnitude a float64 no longer holds every integer, so comparing with a bound could differ.
EXACT_FLOAT_INTEGERS = 2.0**53


@dataclass(frozen=True)
class ArrayCheck:
    """An array (of arrays) of numbers schema, checked on a NumPy array in a few vectorised steps.

    Only schemas that say nothing else compile to one: per level ``type: array``,
    one ``items`` schema and ``minItems``/``maxItems``; at the leaves ``type:
    number`` or ``integer`` and numeric bounds, or ``type: boolean`` (for
    decoded tensors only: JSON text of booleans is left to the validator).

    For such a schema and an array of its depth holding finite numbers,
    ``problem`` decides exactly as the JSON Schema validator would on the same
    values as lists (the property tests hold the two to that), without making
    the lists.
    """

    counts: tuple[tuple[int, int | None], ...]
    leaf: str
    bounds: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, schema: Any) -> ArrayCheck | None:
        """The check equivalent to ``schema``, or None when the schema says more than this can check."""
        counts: list[tuple[int, int | None]] = []
        node = schema
        while isinstance(node, dict) and node.get("type") == "array":
            low, high = node.get("minItems", 0), node.get("maxItems")
            if set(node) - ARRAY_KEYWORDS or not isinstance(node.get("items"), dict):
                return None
            if type(low) is not int or (high is not None and type(high) is not int):
                return None
            counts.append((low, high))
            node = node["items"]
        if not counts or not isinstance(node, dict) or set(node) - LEAF_KEYWORDS:
            return None
        bounds = tuple((keyword, node[keyword]) for keyword in BOUNDS if keyword in node)
        if node.get("type") not in ("number", "integer", "boolean") or (node["type"] == "boolean" and bounds):
            return None
        if not all(type(bound) in (int, float) and abs(bound) < EXACT_FLOAT_INTEGERS for _, bound in bounds):
            return None
        return cls(tuple(counts), node["type"], tuple((keyword, float(bound)) for keyword, bound in bounds))

    @property
    def depth(self) -> int:
        return len(self.counts)

    def problem(self, array: np.ndarray[Any, Any]) -> str | None:
        """Why the array fails the schema, or None. The array must have the schema's depth."""
        for axis, (low, high) in enumerate(self.counts):
            size = array.shape[axis]
            if size < low or (high is not None and size > high):
                where = "" if axis == 0 else f" at depth {axis + 1}"
                return f"has {size} items{where}, outside the schema's {low} to {'any' if high is None else high}"
            if size == 0:  # as JSON, ``[]``: the levels below it hold nothing to check
                return None
        if array.size == 0:
            return None
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return "holds NaN or infinity, which are not JSON numbers"
        if self.leaf == "integer" and array.dtype.kind == "f" and not (array == np.trunc(array)).all():
            return "holds numbers that are not integers"
        low_value, high_value = array.min(), array.max()
        failed = {
            "minimum": lambda bound: low_value < bound,
            "maximum": lambda bound: high_value > bound,
            "exclusiveMinimum": lambda bound: low_value <= bound,
            "exclusiveMaximum": lambda bound: high_value >= bound,
        }
        for keyword, bound in self.bounds:
            if failed[keyword](bound):
                return f"has values outside the schema's {keyword} of {bound:g}"
        return None

    def rows(self, body: bytes, payload: Any) -> np.ndarray[Any, Any] | None:
        """The parsed ``payload`` as a float64 array if this check proves it valid; None when it does not
        decide (a value that is not a number, ragged rows, an invalid payload): validate the JSON then.

        ``body`` is the JSON text ``payload`` was parsed from: holding nothing but
        brackets, commas, blanks and number characters, it holds no strings,
        booleans, nulls or objects, which NumPy would silently convert.
        """
        if not self.numbers_only(body):
            return None
        try:
            array = np.asarray(payload, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):  # ragged rows, or a number too large
            return None
        return self.proven(array) if array.ndim == self.depth else None

    def parse_table(self, body: bytes) -> np.ndarray[Any, Any] | None:
        """A two-level array of numbers parsed straight from its JSON text to a float64 array, if valid.

        Parsing rows into a thousand lists and then converting them costs
        twice what parsing the numbers alone does. So, where ``body`` holds
        only numbers, commas, brackets and blanks: orjson parses it with the
        brackets blanked out (one flat list; it still checks every number and
        comma), and the brackets are checked to sit where a table's do: the
        text with each number as ``n`` and without blanks must show no pair
        that cannot occur in ``[[n,n],[n,n]]``, and its brackets and commas
        must be exactly those of a table of equal rows. None where any of that
        fails, or the check does: the caller parses the usual way then.
        """
        if self.depth != 2 or not self.numbers_only(body):
            return None
        try:
            flat = orjson.loads(b"[" + body.translate(BRACKETS_TO_BLANKS) + b"]")
        except orjson.JSONDecodeError:
            return None
        shape = body.translate(CLASSES, BLANKS)  # each character's class: NUMBER, OPEN, CLOSE or COMMA
        codes = np.frombuffer(shape, dtype=np.uint8)
        if NOT_IN_A_TABLE[codes[:-1] * 4 + codes[1:]].any():  # every pair of neighbours at once
            return None
        skeleton = shape.translate(None, NUMBER)
        rows = skeleton.count(OPEN) - 1
        width = skeleton.find(CLOSE) - 1  # the commas of the first row, plus one
        if rows < 1 or width < 1 or len(flat) != rows * width:
            return None
        row = OPEN + COMMA * (width - 1) + CLOSE
        if skeleton != OPEN + COMMA.join([row] * rows) + CLOSE:
            return None
        try:
            array = np.asarray(flat, dtype=np.float64).reshape(rows, width)
        except (ValueError, TypeError, OverflowError):
            return None
        return self.proven(array)

    def numbers_only(self, body: bytes) -> bool:
        """Whether JSON text holds nothing but brackets, commas, blanks and numbers of this leaf type (integers
        have no fraction or exponent). Never for boolean leaves: their text is left to the validator."""
        if self.leaf == "boolean":
            return False
        return not body.translate(None, NUMBER_TEXT if self.leaf == "number" else INTEGER_TEXT)

    def proven(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        """The float64 array of parsed JSON numbers if it is valid; None when invalid or past exact comparison."""
        if array.size and np.abs(array).max() >= EXACT_FLOAT_INTEGERS:
            return None
        return array if self.problem(array) is None else None


#: The bytes of a JSON document of arrays of numbers; integers have no fraction or exponent.
INTEGER_TEXT = b"0123456789-[], \t\r\n"
NUMBER_TEXT = INTEGER_TEXT + b".eE+"
BLANKS = b" \t\r\n"
BRACKETS_TO_BLANKS = bytes.maketrans(b"[]", b"  ")
#: A table's characters by class, blanks aside: a number's, an opening and a closing bracket, a comma.
NUMBER, OPEN, CLOSE, COMMA = b"\x00", b"\x01", b"\x02", b"\x03"
CLASSES = bytes.maketrans(b"0123456789-.eE+[],", NUMBER * 15 + OPEN + CLOSE + COMMA)
#: Neighbours (blanks aside) that no table of numbers has: anything but [[ [n nn n, ,n n] ], ,[ and ]]; by
#: ``4 * first + second`` of their classes, so that one look up checks every pair of a text as an array
#: (``benchmarks/micro/array_check.py``: seven substring searches took longer than parsing the numbers).
NOT_IN_A_TABLE = np.zeros(16, dtype=bool)
for _pair in (NUMBER + OPEN, CLOSE + NUMBER, OPEN + COMMA, COMMA + CLOSE, COMMA + COMMA, OPEN + CLOSE, CLOSE + OPEN):
    NOT_IN_A_TABLE[4 * _pair[0] + _pair[1]] = True
