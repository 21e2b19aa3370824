"""jsonschema-rs, our validator, decides exactly as the reference `jsonschema` package does.

Property-based: hypothesis generates JSON values (arbitrary ones, and near misses
of valid payloads) for the schemas the server sees most, and both validators
must agree on every one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stevedore_server.base.validation import SchemaValidator

from .predictors import LABELLED, ROWS

IRIS = Path(__file__).resolve().parents[1] / "contrib" / "sklearn_logreg" / "stevedore_sklearn_logreg" / "schemas"
SCHEMAS: dict[str, dict[str, Any]] = {
    "iris predict": json.loads((IRIS / "predict.json").read_text()),
    "iris score": json.loads((IRIS / "score.json").read_text()),
    "rows": ROWS,
    "labelled rows": LABELLED,
    "integers with bounds": {"type": "array", "items": {"type": "integer", "minimum": -3, "exclusiveMaximum": 7}},
    "object": {
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 8}, "lang": {"enum": ["en", "fi"]}},
        "additionalProperties": False,
    },
    "choices": {"anyOf": [{"type": "null"}, {"type": "boolean"}, {"type": "array", "items": {"const": 1}}]},
    "tuples": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False},
    "unique numbers": {"type": "array", "uniqueItems": True, "items": {"type": "number", "multipleOf": 0.5}},
}

# JSON values: orjson gives us exactly these Python types (floats are finite: JSON has no NaN).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=40,
)
# Near misses: lists of valid rows (four measurements in bounds, and a species for the labelled ones), or of rows
# among which some are a little off (a value out of bounds or null, a count off), so that both answers come up
# often (``test_the_generators_reach_both_answers``).
measurements = st.lists(st.floats(0, 100) | st.integers(0, 100), min_size=4, max_size=4)
off_measurements = st.lists(st.floats(-5, 120, allow_nan=False) | st.integers(-5, 120) | st.none(), max_size=5)
iris_rows = st.lists(measurements, min_size=1, max_size=6) | st.lists(measurements | off_measurements, max_size=6)
labels = st.fixed_dictionaries({"x": measurements, "y": st.integers(0, 2)})
off_labels = st.fixed_dictionaries(
    {"x": measurements | st.lists(st.floats(-1, 101), min_size=3, max_size=5), "y": json_values}
)
labelled = st.lists(labels, min_size=1, max_size=6) | st.lists(labels | off_labels, max_size=6)

RUNS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def agree(schema: dict[str, Any], instance: Any) -> None:
    reference = jsonschema.Draft202012Validator(schema)
    ours = SchemaValidator(schema)
    assert ours.is_valid(instance) == reference.is_valid(instance), instance
    # Where invalid, every detail points at a place that exists in the payload.
    if not ours.is_valid(instance):
        details = ours.errors(instance)
        assert details
        for detail in details:
            resolve(instance, detail["path"])


def resolve(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer; KeyError or IndexError if there is none."""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


@pytest.mark.parametrize("name", list(SCHEMAS))
@RUNS
@given(instance=json_values)
def test_any_json_value(name: str, instance: Any) -> None:
    agree(SCHEMAS[name], instance)


@RUNS
@given(instance=iris_rows)
def test_near_misses_of_iris_rows(instance: Any) -> None:
    agree(SCHEMAS["iris predict"], instance)
    agree(SCHEMAS["rows"], instance)


@RUNS
@given(instance=labelled)
def test_near_misses_of_labelled_rows(instance: Any) -> None:
    agree(SCHEMAS["iris score"], instance)
    agree(SCHEMAS["labelled rows"], instance)


@pytest.mark.parametrize(
    ("generator", "name"),
    [(iris_rows, "iris predict"), (iris_rows, "rows"), (labelled, "iris score"), (labelled, "labelled rows")],
    ids=["iris rows on iris predict", "iris rows on rows", "labelled on iris score", "labelled on labelled rows"],
)
def test_the_generators_reach_both_answers(generator: st.SearchStrategy[Any], name: str) -> None:
    """A property that only ever saw invalid values would prove little: the near misses, drawn as the properties draw
    them, are valid often and invalid often."""
    validator = SchemaValidator(SCHEMAS[name])
    answers: Counter[bool] = Counter()

    @RUNS
    @given(instance=generator)
    def draw(instance: Any) -> None:
        answers[validator.is_valid(instance)] += 1

    draw()
    least = RUNS.max_examples // 10
    assert answers[True] >= least and answers[False] >= least, answers


BOUNDED = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number", "minimum": -1.5, "exclusiveMaximum": 10}},
}


@RUNS
@given(
    rows=st.lists(
        st.lists(st.floats(-3, 12, allow_nan=False, allow_infinity=False), min_size=2, max_size=2), max_size=5
    )
)
def test_the_v2_tensor_check_decides_as_the_schema(rows: list[list[float]]) -> None:
    """For schemas V2 checks on the array itself, that check and the reference agree."""
    import numpy as np

    from stevedore_server.core.signature import input_from_schema

    _, check = input_from_schema(BOUNDED)
    assert check is not None
    array = np.asarray(rows, dtype=float).reshape(len(rows), 2)
    assert (check.problem(array) is None) == jsonschema.Draft202012Validator(BOUNDED).is_valid(rows)
