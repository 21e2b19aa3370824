"""Pipelines' limits and edge cases, in process: graphs too deep or too wide to run (refused at check time, no
RecursionError), reducers that keep the answers' types, JSON pointers and conditions as JSON has them, and the
request's size handed to each step (a large request's steps are validated off the event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stevedore_server.base.errors import InvalidPayload
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings.pipelines import Condition, Node, Pipeline, parse_pipelines
from stevedore_server.core import pipelines
from stevedore_server.core.inference import Action, Answer, JSONValue, ModelRef, Payload
from stevedore_server.core.served_models import Registry


def chain(depth: int) -> Pipeline:
    """A pipeline of ``depth`` nodes, each a sequence of the next, the last calling a model."""
    nodes: dict[str, Any] = {f"n{i}": {"type": "sequence", "steps": [{"node": f"n{i + 1}"}]} for i in range(depth - 1)}
    nodes[f"n{depth - 1}"] = {"type": "sequence", "steps": [{"model": "m"}]}
    return parse_pipelines({"deep": {"root": "n0", "nodes": nodes}})["deep"]


def doubling(levels: int) -> Pipeline:
    """Each node a sequence running the next twice: 2**levels model calls, from a few nodes."""
    nodes: dict[str, Any] = {
        f"n{i}": {"type": "sequence", "steps": [{"node": f"n{i + 1}"}, {"node": f"n{i + 1}"}]} for i in range(levels)
    }
    nodes[f"n{levels}"] = {"type": "sequence", "steps": [{"model": "m"}]}
    return parse_pipelines({"wide": {"root": "n0", "nodes": nodes}})["wide"]


def test_a_very_deep_acyclic_graph_is_refused_with_a_reason() -> None:
    # 1200 nested nodes: a recursive walk of them was a RecursionError, which stopped the server's startup
    assert pipelines.graph_problem(chain(1200)) == f"its nodes nest more than {pipelines.MAX_DEPTH} deep, from 'n0'"
    assert pipelines.graph_problem(chain(pipelines.MAX_DEPTH)) is None
    assert pipelines.graph_problem(chain(pipelines.MAX_DEPTH + 1)) is not None


def test_a_graph_fanning_out_past_the_step_limit_is_refused() -> None:
    assert pipelines.graph_problem(doubling(9)) is None  # 512 model calls
    assert pipelines.graph_problem(doubling(10)) == "a call may run 1024 model steps (node 'n0'), more than 1000"


def test_a_cycle_is_still_named() -> None:
    table = {
        "root": "a",
        "nodes": {
            "a": {"type": "sequence", "steps": [{"node": "b"}]},
            "b": {"type": "switch", "steps": [{"node": "a"}]},
        },
    }
    assert pipelines.graph_problem(parse_pipelines({"c": table})["c"]) == "its nodes form a cycle: a -> b -> a"


def node(reducer: str) -> Node:
    return Node("both", "ensemble", (), reducer)


def test_concatenate_keeps_each_answers_types() -> None:
    # a NumPy array of both made the numbers strings: [["small", "3"]]
    assert pipelines.reduce(node("concatenate"), {"a": ["small"], "b": [3]}) == [["small", 3]]
    assert pipelines.reduce(node("concatenate"), {"a": [[1, 2]], "b": [True]}) == [[1, 2, True]]


@pytest.mark.parametrize("answers", [{"a": ["1.5"], "b": [2]}, {"a": [None], "b": [2]}, {"a": [[1, 2]], "b": [1]}])
def test_mean_refuses_what_is_not_numbers(answers: dict[str, Any]) -> None:
    # dtype=float made "1.5" a number and null a NaN (answered as null)
    with pytest.raises(InvalidPayload, match="cannot be combined by mean"):
        pipelines.reduce(node("mean"), answers)


def test_json_pointer_indexes_are_ascii_digits_without_leading_zeros() -> None:
    assert pipelines.resolve([[7, 8]], "/0/1") == 8
    assert pipelines.resolve([[7, 8]], "/0/01") is pipelines.MISSING
    assert pipelines.resolve([[7, 8]], "/0/\N{ARABIC-INDIC DIGIT ONE}") is pipelines.MISSING


def test_conditions_compare_as_json_does() -> None:
    # Python has True == 1 and True > 0; JSON's true is no number
    assert pipelines.holds(Condition("/0", "==", 1), [True]) is False
    assert pipelines.holds(Condition("/0", "!=", 1), [True]) is True
    assert pipelines.holds(Condition("/0", ">", 0), [True]) is False
    assert pipelines.holds(Condition("/0", "in", [1, 2]), [True]) is False
    assert pipelines.holds(Condition("/0", "==", True), [True]) is True
    assert pipelines.holds(Condition("/0", "==", 1), [1.0]) is True


class Recording:
    """The inference core as pipelines see it, answering each call with its payload and recording it."""

    registry = Registry()

    def __init__(self) -> None:
        self.payloads: list[Payload] = []

    async def call(self, ref: ModelRef, action: Action, payload: Payload) -> Answer:
        self.payloads.append(payload)
        if not isinstance(payload, JSONValue):
            raise AssertionError(f"a step's payload is a JSON value, not {payload!r}")
        return Answer(ref, payload.value)  # type: ignore[arg-type]  # its name and version are all steps read


def test_each_step_is_handed_the_requests_size() -> None:
    # the size decides whether a step's payload is validated off the event loop (Inference.prepared); a step's
    # JSONValue had size 0: a request of megabytes was validated on the loop, step after step
    table = {"two": {"type": "sequence", "steps": [{"model": "a"}, {"model": "b"}]}}
    calls = Recording()
    runner = pipelines.Pipelines(parse_pipelines(table), calls)
    answer = asyncio.run(runner.run(runner.entries["two"].definition, [[1.0]], size=5_000_000))
    assert answer.predictions == [[1.0]]
    assert [payload.size for payload in calls.payloads if isinstance(payload, JSONValue)] == [5_000_000] * 2


def test_the_self_tests_steps_are_not_counted() -> None:
    # the self-test's run counted no request but did count its steps, as if clients had called them at startup
    metrics = Metrics()
    table = {"two": {"type": "sequence", "steps": [{"model": "a"}, {"model": "b"}]}}
    runner = pipelines.Pipelines(parse_pipelines(table), Recording(), metrics)
    definition = runner.entries["two"].definition
    asyncio.run(runner.run(definition, [[1.0]], count=False))
    assert counted(metrics, "stevedore_pipeline_steps") == 0
    asyncio.run(runner.run(definition, [[1.0]]))
    assert counted(metrics, "stevedore_pipeline_steps") == 2


def counted(metrics: Metrics, name: str) -> float:
    """The sum of a counter's samples, every label."""
    families = [family for family in metrics.registry.collect() if family.name == name]
    return sum(sample.value for family in families for sample in family.samples if sample.name.endswith("_total"))
