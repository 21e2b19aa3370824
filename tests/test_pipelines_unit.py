"""Pipelines' parts that need no server: the tables' shape (setting errors), conditions, the schema fit check,
the reducers, and which definition wins."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stevedore_server import Predictor
from stevedore_server.base.errors import SettingError
from stevedore_server.base.settings import Settings
from stevedore_server.base.settings.pipelines import Condition, Node, Step, parse_pipelines, read_pipelines
from stevedore_server.base.sources import PluginSource
from stevedore_server.core import pipelines
from stevedore_server.core.inference import Inference
from stevedore_server.core.schema_fit import accepts
from stevedore_server.core.served_models import Registry
from stevedore_server.model_files import array_schema
from stevedore_server.plugins.loading import State, load_model

from .pipelines_server import ISSUE


def test_the_issues_two_forms_parse() -> None:
    tables = read_pipelines("settings.toml", tomllib.loads(ISSUE)["pipelines"])
    parsed = parse_pipelines(tables)
    assert parsed["iris-sum"].root == "root"
    assert [step.model for step in parsed["iris-sum"].nodes["root"].steps] == ["iris-proba", "hooked-sum"]
    router = parsed["router"]
    pick = router.nodes["pick"]
    assert pick.type == "switch" and pick.steps[0].node == "chain"
    assert pick.steps[0].condition == Condition("/0/0", ">", 5)
    chain = router.nodes["chain"].steps
    assert chain[0].timeout == 2.0 and chain[1].soft and str(chain[1].data) == "$response"
    assert router.models() == [("iris", None), ("iris-proba", None), ("hooked-sum", None)]


def test_the_settings_file_keeps_plain_tables(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(ISSUE)
    settings = Settings.load({"STEVEDORE_CONFIG": str(path)})
    assert settings.pipelines["iris-sum"]["steps"][0] == {"model": "iris-proba"}
    assert settings.document()["pipelines"] == settings.pipelines  # what a Ray replica or a worker reads back


@pytest.mark.parametrize(
    ("table", "setting", "problem"),
    [
        ({"type": "pipe", "steps": [{"model": "m"}]}, "pipelines.p.type", "'pipe' is not a node type"),
        ({"type": "sequence", "steps": []}, "pipelines.p.steps", "at least one"),
        ({"type": "sequence", "steps": [{"model": "m", "node": "n"}]}, "pipelines.p.steps[0]", "either a model"),
        ({"type": "sequence", "steps": [{"model": "m", "colour": 1}]}, "pipelines.p.steps[0].colour", "no such key"),
        ({"type": "sequence", "steps": [{"model": "m", "timeout": 0}]}, "pipelines.p.steps[0].timeout", "positive"),
        ({"type": "sequence", "steps": [{"model": "m", "data": "$body"}]}, "pipelines.p.steps[0].data", "$request"),
        ({"type": "sequence", "steps": [{"model": "m", "dependency": "weak"}]}, "dependency", "hard, soft"),
        ({"type": "sequence", "steps": [{"model": "a b"}]}, "pipelines.p.steps[0].model", "NAME:VERSION"),
        ({"type": "splitter", "steps": [{"model": "m", "weight": -1}]}, "steps[0].weight", "positive"),
        (
            {"type": "splitter", "steps": [{"model": "m", "weight": 1}, {"model": "n", "weight": 0}]},
            "steps[1].weight",
            "positive",
        ),
        ({"type": "splitter", "steps": [{"model": "m"}]}, "steps[0].weight", "every step has a weight"),
        ({"type": "sequence", "steps": [{"model": "m", "weight": 1}]}, "steps[0].weight", "only a splitter"),
        (
            {"type": "switch", "steps": [{"model": "m", "condition": {"pointer": "/0", "op": "~", "value": 1}}]},
            "steps[0].condition.op",
            "one of ==, !=, <, <=, >, >=, in",
        ),
        (
            {"type": "switch", "steps": [{"model": "m", "condition": {"pointer": "0", "op": "==", "value": 1}}]},
            "steps[0].condition.pointer",
            "not a JSON pointer",
        ),
        (
            {"type": "switch", "steps": [{"model": "m", "condition": {"pointer": "/0", "op": "in", "value": 1}}]},
            "steps[0].condition.value",
            "a list of values",
        ),
        ({"type": "ensemble", "reducer": "median", "steps": [{"model": "m"}]}, "pipelines.p.reducer", "mean, vote"),
        ({"type": "ensemble", "steps": [{"model": "m"}, {"model": "m"}]}, "pipelines.p", "give one a name"),
        ({"root": "x", "nodes": {"a": {"type": "sequence", "steps": [{"model": "m"}]}}}, "root", "names no node"),
        ({"root": "a", "nodes": {"a": {"type": "sequence", "steps": [{"model": "m"}]}}, "x": 1}, "p.x", "no such"),
    ],
)
def test_a_table_of_the_wrong_shape_is_a_setting_error(table: dict[str, Any], setting: str, problem: str) -> None:
    with pytest.raises(SettingError) as raised:
        read_pipelines("settings.toml", {"p": table})
    message = str(raised.value)
    assert setting in raised.value.setting and problem in message, message
    assert "in settings.toml, table [pipelines.p]" in message


def test_a_wrong_table_in_the_file_stops_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[pipelines.p]\ntype = "sequence"\nsteps = [{ modle = "iris" }]\n')
    with pytest.raises(SettingError, match=r"pipelines\.p\.steps\[0\]\.modle.*did you mean 'model'"):
        Settings.load({"STEVEDORE_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("op", "value", "found", "expected"),
    [
        ("==", 1, 1, True), ("==", 1, 2, False), ("!=", 1, 2, True), ("!=", 1, 1, False),
        ("<", 1, 0, True), ("<", 1, 1, False), ("<=", 1, 1, True), ("<=", 1, 2, False),
        (">", 1, 2, True), (">", 1, 1, False), (">=", 1, 1, True), (">=", 1, 0, False),
        ("in", ["a", "b"], "a", True), ("in", ["a", "b"], "c", False),
        (">", 1, "text", False),  # does not compare: does not hold, no error
    ],
)  # fmt: skip
def test_every_condition_operator(op: str, value: Any, found: Any, expected: bool) -> None:
    assert pipelines.holds(Condition("/x/0", op, value), {"x": [found]}) is expected


def test_a_missing_pointer_holds_no_condition() -> None:
    assert pipelines.holds(Condition("/y", "!=", 1), {"x": 1}) is False
    assert pipelines.resolve({"a/b": {"~": 3}}, "/a~1b/~0") == 3


ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}


@pytest.mark.parametrize(
    ("given", "taken", "problem"),
    [
        ({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}, ROWS, None),
        ({"type": "array", "items": {"type": "string"}}, ROWS, "at /items it gives string, the next takes array"),
        ({"type": "object"}, ROWS, "at / it gives object"),
        ({"type": "object", "required": ["a"]}, {"type": "object", "required": ["a", "b"]}, "requires 'b'"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {"type": "object", "properties": {"a": {"type": "number"}}},
            "at /a it gives string",
        ),
        ({"properties": {"z": {}}}, {"type": "object", "additionalProperties": False}, "gives 'z'"),
        ({}, ROWS, None),  # states nothing: nothing to compare
        ({"anyOf": [{"type": "string"}]}, ROWS, None),  # a limit: anyOf is not compared
    ],
)
def test_accepts_compares_types_items_and_keys(given: Any, taken: Any, problem: str | None) -> None:
    found = accepts(given, taken)
    assert (found is None) if problem is None else (problem in str(found)), found


def node(reducer: str) -> Node:
    return Node("n", "ensemble", (Step(model="a"), Step(model="b")), reducer)


def test_the_reducers() -> None:
    assert pipelines.reduce(node("mean"), {"a": [1, 2], "b": [3, 4]}) == [2.0, 3.0]
    assert pipelines.reduce(node("vote"), {"a": [1, 2], "b": [1, 3], "c": [0, 3]}) == [1, 3]
    assert pipelines.reduce(node("concatenate"), {"a": [1, 2], "b": [[3, 4], [5, 6]]}) == [[1, 3, 4], [2, 5, 6]]
    with pytest.raises(Exception, match="cannot be combined by concatenate"):
        pipelines.reduce(node("concatenate"), {"a": [1, 2], "b": [1]})


def test_the_files_table_wins_over_a_plugins() -> None:
    shipped = {
        "same": ({"type": "sequence", "steps": [{"model": "plugin-model"}]}, PluginSource("x")),
        "other": ({"type": "sequence", "steps": [{"model": "plugin-model"}]}, PluginSource("x")),
    }
    tables = {"same": {"type": "sequence", "steps": [{"model": "file-model"}]}}
    built = pipelines.build(tables, shipped, Inference(Registry(), 64))
    assert built.entries["same"].definition.models() == [("file-model", None)]
    assert built.entries["same"].source == "the settings file"
    assert built.entries["other"].source.startswith("entry point 'x'")


class Declares(Predictor):
    """Says its answer is strings, gives numbers."""

    name = "declares"
    predict_schema = {"type": "array", "items": {"type": "number"}}
    predict_fixture = [1.0]
    output_schema = {"type": "array", "items": {"type": "string"}}

    def predict(self, payload: Any) -> Any:
        return payload


def test_an_output_schema_its_self_test_contradicts_fails_the_model() -> None:
    loaded = load_model(Declares(), PluginSource("declares"))
    assert loaded.state is State.FAILED
    assert "predict's output on predict_fixture does not match output_schema: /0: " in str(loaded.reason)
    kept = load_model(Declares(output_schema={"type": "array"}), PluginSource("declares"))
    assert kept.ready and kept.output_schema == {"type": "array"}


def test_array_schema_of_a_result() -> None:
    assert array_schema(np.zeros((2, 3))) == {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    assert array_schema(np.array(["a"])) == {"type": "array", "items": {"type": "string"}}
    assert array_schema(np.array([{"a": 1}], dtype=object)) is None
