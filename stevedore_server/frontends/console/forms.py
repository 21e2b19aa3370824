"""The try-it form of a model: which inputs its predict schema asks for, pre-filled with its predict fixture.

A schema of one of the common shapes gets a generated form; any other (and any
fixture that does not fit the shape) gets the JSON editor alone, which the page
always offers too. The shapes:

- an object of scalars: one labelled field a property;
- an array of scalars: a list, one input a row;
- an array of rows, a row being an array of scalars (a table of numbers) or an
  object of scalars (a table of records): an editable grid, one column a
  position or property. The width of an array row is the schema's (``minItems``
  equal to ``maxItems``, or ``prefixItems``), else the fixture's.

A scalar is a number, an integer, a string, a boolean (a checkbox) or an enum
of scalars (a select). Bounds become the input's limits (``min``, ``max``,
``step``, ``minlength``, ``maxlength``). The server still validates every
request: the page shows its 422 details next to the inputs they point at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

SCALAR_TYPES = ("number", "integer", "string", "boolean")
#: Keywords that combine or redirect schemas: a schema using one is left to the JSON editor.
COMBINATORS = frozenset({"$ref", "$dynamicRef", "anyOf", "oneOf", "allOf", "not", "if", "then", "else"})
#: JSON Schema bounds to the input attributes that say the same.
NUMBER_LIMITS = {"minimum": "min", "maximum": "max"}
STRING_LIMITS = {"minLength": "minlength", "maxLength": "maxlength"}
#: Most rows and columns a generated grid shows; a larger fixture is left to the JSON editor.
MAX_ROWS = 200
MAX_COLUMNS = 64


#: The values of a form: one tuple a row, one value an input.
Values = tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Input:
    """One scalar input: a field of an object, or a column of a grid."""

    #: The property it fills (an empty string for a position in an array).
    key: str
    label: str
    #: number, integer, string, boolean or enum.
    kind: str
    required: bool = False
    description: str = ""
    #: HTML attributes giving the schema's bounds.
    limits: dict[str, str] = field(default_factory=dict)
    #: An enum's options: each value as JSON, and its label.
    options: tuple[tuple[str, str], ...] = ()

    def shown(self, value: Any) -> str:
        """``value`` as the input's initial text (an enum's: the JSON of its option)."""
        if value is None:
            return ""
        if self.kind == "enum":
            return as_json(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


@dataclass(frozen=True)
class Form:
    """A generated form: ``fields`` (an object), ``list`` (an array of scalars) or ``table`` (an array of rows)."""

    shape: str
    #: The fields of an object; the columns of a table; the one input of a list.
    inputs: tuple[Input, ...]
    #: What a row of a table or list is: ``array``, ``object`` or ``scalar`` (a list's).
    row: str = ""
    #: The initial values: one list a row, one value an input (a ``fields`` form has one row).
    values: Values = ()
    min_rows: int = 0
    max_rows: int | None = None

    @property
    def blank(self) -> tuple[Any, ...]:
        """The values of a new row."""
        return (None,) * len(self.inputs)


def as_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def form_for(schema: Any, fixture: Any) -> Form | None:
    """The generated form for a predict schema and fixture, or None: the JSON editor alone."""
    if not isinstance(schema, dict) or COMBINATORS & schema.keys():
        return None
    if schema.get("type") == "object":
        return object_form(schema, fixture)
    if schema.get("type") == "array":
        return array_form(schema, fixture)
    return None


def object_form(schema: dict[str, Any], fixture: Any) -> Form | None:
    inputs = object_inputs(schema)
    if inputs is None or not isinstance(fixture, dict) or not fixture.keys() <= {i.key for i in inputs}:
        return None
    return Form("fields", inputs, values=(tuple(fixture.get(i.key) for i in inputs),), min_rows=1, max_rows=1)


def array_form(schema: dict[str, Any], fixture: Any) -> Form | None:
    items = schema.get("items")
    if not isinstance(fixture, list) or not isinstance(items, dict) or "prefixItems" in schema:
        return None
    if len(fixture) > MAX_ROWS or COMBINATORS & items.keys():
        return None
    min_rows, max_rows = int(schema.get("minItems", 0)), schema.get("maxItems")
    one = scalar_input("", "value", items)
    if one is not None:
        return Form("list", (one,), "scalar", tuple((value,) for value in fixture), min_rows, max_rows)
    rows = table_rows(items, fixture)
    if rows is None:
        return None
    row, columns, values = rows
    return Form("table", columns, row, values, min_rows, max_rows)


def table_rows(items: dict[str, Any], fixture: list[Any]) -> tuple[str, tuple[Input, ...], Values] | None:
    """What a row of a table is, its columns, and the fixture's values: None if the fixture does not fit."""
    if items.get("type") == "object":
        columns = object_inputs(items)
        keys = {column.key for column in columns or ()}
        if columns is None or not all(isinstance(row, dict) and row.keys() <= keys for row in fixture):
            return None
        return "object", columns, tuple(tuple(row.get(column.key) for column in columns) for row in fixture)
    if items.get("type") == "array":
        columns = array_columns(items, fixture)
        if columns is None or not all(isinstance(row, list) and len(row) == len(columns) for row in fixture):
            return None
        return "array", columns, tuple(tuple(row) for row in fixture)
    return None


def object_inputs(schema: dict[str, Any]) -> tuple[Input, ...] | None:
    """One input a property, if every property is a scalar."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties or COMBINATORS & schema.keys():
        return None
    required = set(schema.get("required", ()))
    inputs = [scalar_input(str(key), str(key), spec, key in required) for key, spec in properties.items()]
    if any(each is None for each in inputs) or len(inputs) > MAX_COLUMNS:
        return None
    return tuple(each for each in inputs if each is not None)


def array_columns(schema: dict[str, Any], fixture: list[Any]) -> tuple[Input, ...] | None:
    """The columns of an array row: its ``prefixItems``, or as many as it holds (the fixture's if not fixed)."""
    if COMBINATORS & schema.keys():
        return None
    positions = schema.get("prefixItems")
    if isinstance(positions, list):
        if schema.get("items", False) is not False:
            return None
        columns = [scalar_input("", str(index + 1), spec, True) for index, spec in enumerate(positions)]
        return None if any(each is None for each in columns) else tuple(c for c in columns if c is not None)
    width = fixed_width(schema, fixture)
    items = schema.get("items")
    if width is None or not 1 <= width <= MAX_COLUMNS or not isinstance(items, dict):
        return None
    columns = [scalar_input("", str(index + 1), items, True) for index in range(width)]
    return None if any(each is None for each in columns) else tuple(c for c in columns if c is not None)


def fixed_width(schema: dict[str, Any], fixture: list[Any]) -> int | None:
    """The schema's width of a row, else the fixture's (None when its rows differ)."""
    if "minItems" in schema and schema.get("minItems") == schema.get("maxItems"):
        return int(schema["minItems"])
    widths = {len(row) for row in fixture if isinstance(row, list)}
    return widths.pop() if len(widths) == 1 else None


def scalar_input(key: str, label: str, schema: Any, required: bool = False) -> Input | None:
    """The input for a scalar schema, or None if it is not one."""
    if not isinstance(schema, dict) or COMBINATORS & schema.keys():
        return None
    title = str(schema.get("title") or label)
    description = str(schema.get("description") or "")
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            return None
        options = tuple((as_json(value), str(value)) for value in values)
        return Input(key, title, "enum", required, description, options=options)
    kind = schema.get("type")
    if kind not in SCALAR_TYPES:
        return None
    return Input(key, title, kind, required, description, limits=limits_of(kind, schema))


def limits_of(kind: str, schema: dict[str, Any]) -> dict[str, str]:
    """The HTML attributes that give a scalar schema's bounds."""
    if kind == "string":
        return attributes(schema, STRING_LIMITS)
    if kind not in ("number", "integer"):
        return {}
    step = schema.get("multipleOf")
    return attributes(schema, NUMBER_LIMITS) | {
        "step": str(step) if is_number(step) else "1" if kind == "integer" else "any"
    }


def attributes(schema: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    """The attribute of each keyword in ``names`` the schema gives a number."""
    return {attribute: str(schema[keyword]) for keyword, attribute in names.items() if is_number(schema.get(keyword))}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
