"""The vectorised array check decides as the reference `jsonschema` package does.

Property-based, as test_validation.py: hypothesis generates array-of-numbers
schemas (item counts, integer or number leaves, bounds) and payloads near them
(right and wrong counts, out-of-bound values, booleans, strings, nulls, ragged
rows), and the check must agree with `jsonschema` on every one it decides.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import numpy as np
import numpy.typing as npt
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stevedore_server.base.validation import EXACT_FLOAT_INTEGERS, ArrayCheck
from stevedore_server.core.inference import VECTOR_CHECK_MIN_BYTES

from .helpers import Registers
from .predictors import ArrayInput, Positive, RowSum
from .test_validation import SCHEMAS

RUNS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def compiled(schema: dict[str, Any]) -> ArrayCheck:
    check = ArrayCheck.of(schema)
    assert check is not None, schema
    return check


@st.composite
def array_schemas(draw: st.DrawFn) -> dict[str, Any]:
    leaf: dict[str, Any] = {"type": draw(st.sampled_from(["number", "integer"]))}
    for keyword in draw(st.sets(st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]))):
        leaf[keyword] = draw(st.integers(-10, 10) | st.floats(-10, 10))
    schema = leaf
    for _ in range(draw(st.integers(1, 3))):
        level: dict[str, Any] = {"type": "array", "items": schema}
        low = draw(st.none() | st.integers(0, 3))
        if low is not None:
            level["minItems"] = low
        high = draw(st.none() | st.integers(low or 0, 4))
        if high is not None:
            level["maxItems"] = high
        schema = level
    return schema


numbers = st.integers(-12, 12) | st.floats(-12, 12) | st.sampled_from([0.5, -0.0, 1e-300, 2.0**60, -(2.0**60)])
odd_values = st.booleans() | st.none() | st.text(max_size=3) | st.sampled_from(["1.5", "7"])


def nested(depth: int, leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Rectangular arrays of ``depth`` levels (the common case), with odd leaves now and then."""
    if depth == 0:
        return leaves
    return st.integers(0, 5).flatmap(lambda size: st.lists(nested(depth - 1, leaves), min_size=size, max_size=size))


@st.composite
def schema_and_payload(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    schema = draw(array_schemas())
    depth = compiled(schema).depth
    leaves = numbers | odd_values if draw(st.integers(0, 4)) == 0 else numbers
    shape = st.sampled_from([depth, depth, depth, depth - 1, depth + 1]).filter(lambda d: d >= 0)
    payload = draw(shape.flatmap(lambda d: nested(d, leaves)) | nested(depth, st.just([1.0]) | numbers))
    return schema, payload


def reshaped(values: list[Any], shape: list[int]) -> list[Any]:
    """``values`` as nested lists of ``shape``: the JSON of a tensor of that shape."""
    if len(shape) == 1:
        return values
    step = math.prod(shape[1:])
    return [reshaped(values[row * step : (row + 1) * step], shape[1:]) for row in range(shape[0])]


@st.composite
def schema_and_rectangle(draw: st.DrawFn) -> tuple[dict[str, Any], list[Any]]:
    """A schema and a rectangular array of its depth and leaf type, as nested lists (the near misses of
    ``schema_and_payload`` are mostly of another depth, ragged or odd, and seldom what the schema wants)."""
    schema = draw(array_schemas())
    check = compiled(schema)
    # Only the last dimension may be empty: [] is the JSON of shape (0, 3) too, whose 3 JSON cannot tell. Most
    # dimensions keep to their level's minItems and maxItems, so that many rectangles are valid (the rest test
    # the check's refusals).
    levels = list(item_bounds(schema))
    outer = [draw(dimension(low, high, 1)) for low, high in levels[:-1]]
    shape = [*outer, draw(dimension(*levels[-1], 0))]
    leaves = numbers if check.leaf == "number" else st.integers(-12, 12)
    return schema, reshaped(draw(st.lists(leaves, min_size=math.prod(shape), max_size=math.prod(shape))), shape)


def item_bounds(schema: dict[str, Any]) -> Iterator[tuple[int, int]]:
    """Each array level's (minItems, maxItems), outermost first, within 0 to 5."""
    while schema.get("type") == "array":
        yield schema.get("minItems", 0), min(schema.get("maxItems", 5), 5)
        schema = schema["items"]


def dimension(low: int, high: int, least: int) -> st.SearchStrategy[int]:
    """A size of at least ``least``: within the level's bounds three times in four, else anything up to 5."""
    within = st.integers(max(low, least), high) if max(low, least) <= high else st.integers(least, 5)
    return st.one_of(within, within, within, st.integers(least, 5))


@st.composite
def schema_and_tensor(draw: st.DrawFn) -> tuple[dict[str, Any], npt.NDArray[Any]]:
    """A rectangle as the protocol's decoding hands it over: what it refuses before any check (ragged arrays, other
    types) is not drawn, so the check is asked of every example."""
    schema, rectangle = draw(schema_and_rectangle())
    return schema, np.asarray(rectangle, dtype=np.float64 if compiled(schema).leaf == "number" else np.int64)


def reached(taken: Counter[str], *branches: str) -> None:
    """Each branch that asserts something ran on a twentieth of the examples at least: an assertion inside a branch
    the generators never reach would pass on nothing."""
    least = RUNS.max_examples // 20
    assert all(taken[branch] >= least for branch in branches), f"{dict(taken)}: each of {branches} needs {least}"


def test_an_array_the_check_accepts_is_valid_and_holds_the_payload() -> None:
    taken: Counter[str] = Counter()

    @RUNS
    @given(schema_and_payload() | schema_and_rectangle())
    def example(case: tuple[dict[str, Any], Any]) -> None:
        schema, payload = case
        check = compiled(schema)
        body = orjson.dumps(payload)
        array = check.rows(body, orjson.loads(body))
        if array is None:
            taken["declined"] += 1
            return
        taken["accepted" if array.size else "accepted, empty"] += 1
        assert jsonschema.Draft202012Validator(schema).is_valid(payload), payload
        assert array.tolist() == np.asarray(payload, dtype=np.float64).tolist()

    example()
    reached(taken, "accepted")


def test_a_valid_array_of_numbers_is_accepted() -> None:
    taken: Counter[str] = Counter()

    @RUNS
    @given(schema_and_rectangle())
    def example(case: tuple[dict[str, Any], list[Any]]) -> None:
        schema, payload = case
        check = compiled(schema)
        body = orjson.dumps(payload)
        rectangular = np.asarray(payload, dtype=object)
        plain = all(type(value) in (int, float) for value in rectangular.ravel())  # no booleans, strings or nulls
        fits = rectangular.ndim == check.depth and plain and np.abs(rectangular.astype(float)).max(initial=0) < 2**53
        integer_text = check.leaf == "number" or all(type(value) is int for value in rectangular.ravel())
        if not (jsonschema.Draft202012Validator(schema).is_valid(payload) and fits and integer_text):
            taken["no claim"] += 1
            return
        taken["valid array of numbers" if rectangular.size else "valid, empty"] += 1
        assert check.rows(body, orjson.loads(body)) is not None, payload

    example()
    reached(taken, "valid array of numbers")


def test_the_check_on_a_decoded_tensor_agrees_with_the_schema() -> None:
    taken: Counter[str] = Counter()

    @RUNS
    @given(schema_and_tensor())
    def example(case: tuple[dict[str, Any], npt.NDArray[Any]]) -> None:
        schema, array = case
        valid = jsonschema.Draft202012Validator(schema).is_valid(array.tolist())
        taken[("valid" if valid else "invalid") + (" tensor" if array.size else " empty tensor")] += 1
        assert (compiled(schema).problem(array) is None) == valid, (schema, array.tolist())

    example()
    reached(taken, "valid tensor", "invalid tensor")


@pytest.mark.parametrize("shape", [(0, 1), (0, 3, 2), (2, 0, 5), (1, 2, 0)])
def test_a_tensor_empty_at_a_level_is_checked_as_its_json_text(shape: tuple[int, ...]) -> None:
    # As JSON an empty level holds nothing below it (shape (0, 1) is `[]`): the levels below cannot fail.
    schema: dict[str, Any] = {"type": "number"}
    for _ in shape[1:]:
        schema = {"type": "array", "maxItems": 0, "items": schema}
    schema = {"type": "array", "items": schema}
    array = np.zeros(shape)
    valid = jsonschema.Draft202012Validator(schema).is_valid(array.tolist())
    assert (compiled(schema).problem(array) is None) == valid, (shape, array.tolist())


@st.composite
def table_texts(draw: st.DrawFn) -> tuple[dict[str, Any], bytes, bool]:
    """A two-level schema and the JSON text of a table, as clients write it, perhaps mutated at a few places."""
    tables = array_schemas().filter(lambda schema: compiled(schema).depth == 2)
    schema = draw(st.just({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}) | tables)
    rows, width = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    table = draw(st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=rows, max_size=rows))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", ":"), (",\n ", ":")]))
    text = (" " * draw(st.integers(0, 1)) + json.dumps(table, separators=separators)).encode()
    mutated = False
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and at < len(text):
            text = text[:at] + text[at + 1 :]
        else:
            text = (
                text[:at] + draw(st.sampled_from([b"[", b"]", b",", b" ", b"1", b"-", b".", b"e", b"\n"])) + text[at:]
            )
        mutated = True
    return schema, text, mutated


def test_a_table_parsed_from_text_is_exactly_the_valid_json_it_holds() -> None:
    taken: Counter[str] = Counter()

    @RUNS
    @given(table_texts())
    def example(case: tuple[dict[str, Any], bytes, bool]) -> None:
        schema, text, mutated = case
        check = compiled(schema)
        array = check.parse_table(text)
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError:
            taken["not JSON"] += 1
            assert array is None, text  # never a table from text that is not JSON
            return
        valid = jsonschema.Draft202012Validator(schema).is_valid(payload)
        if array is not None:
            taken["parsed"] += 1
            assert valid, text
            assert array.tolist() == np.asarray(payload, dtype=np.float64).tolist()
            return
        if not mutated and valid and (check.leaf == "number" or (b"." not in text and b"e" not in text)):
            taken["declined, beyond exact integers"] += 1
            assert np.abs(np.asarray(payload, dtype=np.float64)).max() >= EXACT_FLOAT_INTEGERS, text
            return
        taken["declined, no claim"] += 1

    example()
    reached(taken, "not JSON", "parsed", "declined, beyond exact integers")


def test_table_text_with_brackets_out_of_place_is_not_a_table() -> None:
    check = ArrayCheck.of({"type": "array", "items": {"type": "array", "items": {"type": "number"}}})
    assert check is not None
    for text in (
        b"[[1,2,3,]4,[5,6,7,8]]",
        b"[1[,2,3,4]]",
        b"[[1,2],[3,4]]5",
        b"[[1,2],[3,4]",
        b"[[1,2],[3]]",
        b"[[1,2][3,4]]",
        b"[[1,2],,[3,4]]",
        b"[[1 2],[3,4]]",
        b"[[]]",
        b"[[1,2],[3,4]],[]",
        b"[[01,2]]",
    ):
        assert check.parse_table(text) is None, text
    assert check.parse_table(b" [ [1, 2.5] ,\n [3 ,-4e2] ] ").tolist() == [[1, 2.5], [3, -400]]  # type: ignore[union-attr]


def test_a_non_finite_tensor_is_refused() -> None:
    check = ArrayCheck.of({"type": "array", "items": {"type": "number"}})
    assert check is not None
    assert check.problem(np.array([1.0, np.nan])) == "holds NaN or infinity, which are not JSON numbers"
    assert check.problem(np.array([np.inf])) is not None


@pytest.mark.parametrize(
    "schema",
    [
        SCHEMAS["iris predict"],
        SCHEMAS["rows"],
        SCHEMAS["integers with bounds"],
        {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "description": "rows"},
    ],
)
def test_array_schemas_compile(schema: dict[str, Any]) -> None:
    assert ArrayCheck.of(schema) is not None


@pytest.mark.parametrize(
    "schema",
    [
        SCHEMAS["unique numbers"],
        SCHEMAS["tuples"],
        SCHEMAS["labelled rows"],
        {"type": "array", "items": {"type": "number", "enum": [1, 2]}},
        {"type": "array", "items": {"type": ["number", "null"]}},
        {"type": "array", "items": {"type": "boolean", "minimum": 0}},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": [{"type": "number"}]},
        {"type": "array", "minItems": 1.5, "items": {"type": "number"}},
        {"type": "array", "items": {"type": "number", "maximum": EXACT_FLOAT_INTEGERS * 2}},
        {"type": "array", "items": {"type": "number", "minimum": True}},
        {"type": "array", "contains": {"type": "number"}, "items": {"type": "number"}},
        {"type": "number"},
    ],
)
def test_schemas_that_say_more_do_not_compile(schema: dict[str, Any]) -> None:
    assert ArrayCheck.of(schema) is None


def test_a_boolean_tensor_is_checked_and_boolean_text_left_to_the_validator() -> None:
    check = ArrayCheck.of({"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "boolean"}})
    assert check is not None
    assert check.problem(np.array([True, False])) is None
    assert check.problem(np.array([True])) is not None
    assert check.rows(b"[true, false]", [True, False]) is None
    table = compiled({"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}})
    assert table.parse_table(b"[[1, 0], [0, 1]]") is None  # numbers are not booleans


def test_text_that_numpy_would_convert_is_never_accepted() -> None:
    check = ArrayCheck.of({"type": "array", "items": {"type": "array", "items": {"type": "number"}}})
    assert check is not None
    for body in (b'[["1.5", 2]]', b"[[true, 2]]", b"[[null, 2]]", b"[[1, 2], [3]]", b"[1, [2]]"):
        assert check.rows(body, orjson.loads(body)) is None, body
    assert check.rows(b"[[1, 2.5], [3, -4e2]]", [[1, 2.5], [3, -4e2]]) is not None


# -- on the stevedore predict route ------------------------------------------------------------


def test_a_large_array_reaches_a_numpy_input_predictor_as_an_array(make_client: Callable[..., TestClient]) -> None:
    ArrayInput.received.clear()
    client = make_client(Registers(ArrayInput(), RowSum()))
    rows = [[float(i), 0.5] for i in range(200)]  # a body over VECTOR_CHECK_MIN_BYTES
    assert len(orjson.dumps(rows)) >= VECTOR_CHECK_MIN_BYTES
    response = client.post("/models/arrays/predict", json=rows)
    assert response.status_code == 200
    assert response.json()["predictions"] == [i + 0.5 for i in range(200)]
    assert ArrayInput.received.pop() is np.ndarray
    assert client.post("/models/rowsum/predict", json=rows).json()["predictions"] == [i + 0.5 for i in range(200)]
    client.post("/models/arrays/predict", json=[[1, 2]])  # small: the validator, and lists
    assert ArrayInput.received.pop() is list


@pytest.mark.parametrize(
    ("bad", "pointer"),
    [("x", "/150/1"), (True, "/150/1"), (None, "/150/1"), ([1], "/150/1")],
)
def test_a_large_invalid_payload_gets_the_validators_details(
    make_client: Callable[..., TestClient], bad: Any, pointer: str
) -> None:
    client = make_client(Registers(Positive()))
    rows: list[list[Any]] = [[float(i), 0.5] for i in range(200)]
    rows[150][1] = bad
    response = client.post("/models/positive/predict", json=rows)
    assert response.status_code == 422
    assert [detail["path"] for detail in response.json()["details"]] == [pointer]


def test_a_large_payload_out_of_bounds_is_refused(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(Positive()))
    rows = [[float(i), 0.5] for i in range(200)]
    rows[7][0] = -1.0
    response = client.post("/models/positive/predict", json=rows)
    assert response.status_code == 422
    assert response.json()["details"][0]["path"] == "/7/0"
