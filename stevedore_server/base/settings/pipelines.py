"""``[pipelines.NAME]`` tables: pipelines of models, read and checked for their shape (what they call is checked
once the models are loaded, by ``core.pipelines``).

Two forms. One node, whose table is the node::

    [pipelines.iris-sum]
    type = "sequence"
    steps = [{ model = "iris-proba" }, { model = "hooked-sum", data = "$response" }]

or several, ``root`` naming the entry::

    [pipelines.router]
    root = "pick"
    [pipelines.router.nodes.pick]
    type = "switch"
    steps = [{ node = "chain", condition = { pointer = "/0/0", op = ">", value = 5 } }, { model = "iris" }]

``read_pipelines`` checks the tables and keeps them as plain tables (``Settings`` holds them so: its document
travels to Ray Serve replicas and to ``--workers N``); ``parse_pipelines`` turns them into ``Pipeline``
definitions, what ``core.pipelines`` runs and ``deploy.manifests`` writes as KServe ``InferenceGraph``s. A table of
the wrong shape is a ``SettingError`` naming ``pipelines.NAME...`` and the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stevedore_server.base.errors import SettingError, did_you_mean

NODE_TYPES = ("sequence", "switch", "ensemble", "splitter")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in")
REDUCERS = ("mean", "vote", "concatenate")
DEPENDENCIES = ("hard", "soft")
#: What a step's ``data`` and a condition's ``source`` start with: the pipeline's input, the previous answer.
REQUEST, RESPONSE = "$request", "$response"

PIPELINE_KEYS = frozenset({"description", "root", "nodes"})
NODE_KEYS = frozenset({"type", "steps", "reducer", "description"})
STEP_KEYS = frozenset({"model", "node", "data", "timeout", "dependency", "condition", "weight", "name"})
CONDITION_KEYS = frozenset({"pointer", "op", "value", "source"})
#: The node a one-node pipeline's table is.
SINGLE_NODE = "root"
NAME = re.compile(r"\A[A-Za-z0-9._-]+\Z")


@dataclass(frozen=True)
class DataRef:
    """What a step receives: ``source`` (``$request`` or ``$response``) and a JSON pointer into it ("": whole)."""

    source: str
    pointer: str = ""

    def __str__(self) -> str:
        return self.source + self.pointer


@dataclass(frozen=True)
class Condition:
    """A switch step's condition: the value at ``pointer`` in ``source`` compared by ``op`` with ``value``."""

    pointer: str
    op: str
    value: Any
    source: str = REQUEST


@dataclass(frozen=True)
class Step:
    """One step of a node: a served model (``model``, with ``version`` or None: its default) or another node."""

    model: str | None = None
    version: str | None = None
    node: str | None = None
    #: None: the node's input for its first step (and every step of a switch, ensemble or splitter), the previous
    #: step's answer for the others of a sequence.
    data: DataRef | None = None
    timeout: float | None = None
    dependency: str = "hard"
    condition: Condition | None = None
    weight: float | None = None
    #: An ensemble step's key in the merged answer (default: the model's or node's name).
    name: str | None = None

    @property
    def key(self) -> str:
        """How answers, metrics and errors name the step."""
        return self.name or self.node or self.target

    @property
    def target(self) -> str:
        """``model``, ``model:version``, or the node's name."""
        if self.node is not None:
            return self.node
        return f"{self.model}:{self.version}" if self.version else str(self.model)

    @property
    def soft(self) -> bool:
        return self.dependency == "soft"


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    steps: tuple[Step, ...]
    reducer: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Pipeline:
    """A pipeline's definition: its nodes by name and the one it starts at."""

    name: str
    root: str
    nodes: Mapping[str, Node]
    description: str = ""

    def models(self) -> list[tuple[str, str | None]]:
        """Every (model, version) its steps name, each once, in order."""
        named = [(s.model, s.version) for n in self.nodes.values() for s in n.steps if s.model is not None]
        return list(dict.fromkeys(named))


def read_pipelines(where: str, tables: Any) -> dict[str, Any]:
    """The pipelines of ``tables`` (the file's ``pipelines`` table, or a plugin's definitions), checked for their
    shape and kept as plain tables; ``SettingError`` naming the table and ``where`` otherwise."""
    if not isinstance(tables, Mapping) or not all(isinstance(table, Mapping) for table in tables.values()):
        raise SettingError("pipelines", "must be [pipelines.NAME] tables", f"in {where}")
    checked = {}
    for name, table in tables.items():
        parse_pipeline(str(name), table, where)
        checked[str(name)] = plain(table)
    return checked


def parse_pipelines(tables: Mapping[str, Any], where: str = "the settings") -> dict[str, Pipeline]:
    """The typed definitions of ``tables`` (as ``read_pipelines`` keeps them)."""
    return {name: parse_pipeline(name, table, where) for name, table in tables.items()}


def with_shipped(tables: Mapping[str, Any], shipped: Mapping[str, Mapping[str, Any]]) -> dict[str, Pipeline]:
    """The typed definitions of the settings file's ``tables`` and of the plugins' (``shipped``, by name); the
    file's table of a name wins over a plugin's."""
    return parse_pipelines({name: table for name, table in shipped.items() if name not in tables}, "a plugin") | (
        parse_pipelines(tables)
    )


def parse_pipeline(name: str, table: Mapping[str, Any], where: str) -> Pipeline:
    setting = f"pipelines.{name}"
    origin = f"in {where}, table [{setting}]"
    if not NAME.match(name):
        raise SettingError(setting, "a pipeline's name is letters, digits, '.', '_' or '-'", origin)
    description = described(table, setting, origin)
    if "nodes" not in table and "root" not in table:  # one node: the table is the node
        return Pipeline(name, SINGLE_NODE, {SINGLE_NODE: parse_node(SINGLE_NODE, table, setting, origin)}, description)
    unknown(table, PIPELINE_KEYS, setting, origin, "a pipeline of several nodes")
    nodes = table.get("nodes")
    if not isinstance(nodes, Mapping) or not nodes:
        raise SettingError(f"{setting}.nodes", "must be [pipelines.NAME.nodes.NODE] tables, at least one", origin)
    root = text(table.get("root"), f"{setting}.root", origin)
    if root not in nodes:
        problem = f"names no node{did_you_mean(root, nodes)} (nodes: {', '.join(nodes)})"
        raise SettingError(f"{setting}.root", problem, origin)
    parsed = {}
    for node_name, node_table in nodes.items():
        node_setting = f"{setting}.nodes.{node_name}"
        if not isinstance(node_table, Mapping):
            raise SettingError(node_setting, "must be a table", origin)
        parsed[str(node_name)] = parse_node(str(node_name), node_table, node_setting, origin)
    return Pipeline(name, root, parsed, description)


def parse_node(name: str, table: Mapping[str, Any], setting: str, origin: str) -> Node:
    unknown(table, NODE_KEYS, setting, origin, "a node")
    kind = table.get("type")
    if kind not in NODE_TYPES:
        raise SettingError(f"{setting}.type", f"{kind!r} is not a node type: one of {', '.join(NODE_TYPES)}", origin)
    steps = table.get("steps")
    if not isinstance(steps, list) or not steps:
        raise SettingError(f"{setting}.steps", "must be a list of steps, at least one", origin)
    parsed = tuple(parse_step(step, kind, f"{setting}.steps[{index}]", origin) for index, step in enumerate(steps))
    reducer = table.get("reducer")
    if reducer is not None and (kind != "ensemble" or reducer not in REDUCERS):
        problem = f"an ensemble's reducer is one of {', '.join(REDUCERS)} (none: a table by step)"
        raise SettingError(f"{setting}.reducer", problem, origin)
    if kind == "ensemble":
        check_keys(parsed, setting, origin)
    description = described(table, setting, origin)
    return Node(name, kind, parsed, reducer, description)


def parse_step(table: Any, kind: str, setting: str, origin: str) -> Step:
    if not isinstance(table, Mapping):
        raise SettingError(setting, "a step is a table: { model = NAME } or { node = NAME }", origin)
    unknown(table, STEP_KEYS, setting, origin, "a step")
    if ("model" in table) == ("node" in table):
        raise SettingError(setting, "a step names either a model (model = NAME) or a node (node = NAME)", origin)
    model, version, node = None, None, None
    if "model" in table:
        model, version = model_of(text(table["model"], f"{setting}.model", origin), f"{setting}.model", origin)
    else:
        node = text(table["node"], f"{setting}.node", origin)
    return Step(
        model=model,
        version=version,
        node=node,
        data=data_of(table.get("data"), f"{setting}.data", origin),
        timeout=positive(table.get("timeout"), f"{setting}.timeout", origin),
        dependency=choice(table.get("dependency", "hard"), DEPENDENCIES, f"{setting}.dependency", origin),
        condition=condition_of(table.get("condition"), kind, f"{setting}.condition", origin),
        weight=weight_of(table.get("weight"), kind, f"{setting}.weight", origin),
        name=None if table.get("name") is None else text(table["name"], f"{setting}.name", origin),
    )


def model_of(value: str, setting: str, origin: str) -> tuple[str, str | None]:
    """``name`` or ``name:version``."""
    name, _, version = value.partition(":")
    if not NAME.match(name) or (version and not NAME.match(version)):
        raise SettingError(setting, f"{value!r} is not a model: NAME or NAME:VERSION", origin)
    return name, version or None


def data_of(value: Any, setting: str, origin: str) -> DataRef | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith((REQUEST, RESPONSE)):
        problem = f'{value!r}: "$request", "$response", or a JSON pointer into either ("$response/0")'
        raise SettingError(setting, problem, origin)
    source = REQUEST if value.startswith(REQUEST) else RESPONSE
    return DataRef(source, pointer(value[len(source) :], setting, origin))


def pointer(value: Any, setting: str, origin: str) -> str:
    """A JSON pointer (RFC 6901): "" or "/a/0"."""
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise SettingError(setting, f'{value!r} is not a JSON pointer: "" or "/key/0"', origin)
    return value


def condition_of(value: Any, kind: str, setting: str, origin: str) -> Condition | None:
    if value is None:
        return None
    if kind != "switch":
        raise SettingError(setting, "only a switch's steps have a condition", origin)
    if not isinstance(value, Mapping):
        raise SettingError(setting, "must be a table { pointer = ..., op = ..., value = ... }", origin)
    unknown(value, CONDITION_KEYS, setting, origin, "a condition")
    for key in ("pointer", "op", "value"):
        if key not in value:
            raise SettingError(f"{setting}.{key}", "is required", origin)
    op = choice(value["op"], OPERATORS, f"{setting}.op", origin)
    if op == "in" and not isinstance(value["value"], list):
        raise SettingError(f"{setting}.value", "the op 'in' compares with a list of values", origin)
    source = choice(value.get("source", REQUEST), (REQUEST, RESPONSE), f"{setting}.source", origin)
    return Condition(pointer(value["pointer"], f"{setting}.pointer", origin), op, plain(value["value"]), source)


def weight_of(value: Any, kind: str, setting: str, origin: str) -> float | None:
    if value is None:
        if kind == "splitter":
            raise SettingError(setting, "a splitter's every step has a weight", origin)
        return None
    if kind != "splitter":
        raise SettingError(setting, "only a splitter's steps have a weight", origin)
    return positive(value, setting, origin)


def check_keys(steps: tuple[Step, ...], setting: str, origin: str) -> None:
    """An ensemble's answers are merged by step key: each once."""
    seen: set[str] = set()
    for step in steps:
        if step.key in seen:
            raise SettingError(setting, f"two steps have the key {step.key!r}: give one a name = ...", origin)
        seen.add(step.key)


def described(table: Mapping[str, Any], setting: str, origin: str) -> str:
    value = table.get("description", "")
    if not isinstance(value, str):
        raise SettingError(f"{setting}.description", f"{value!r} is not a string", origin)
    return value


def positive(value: Any, setting: str, origin: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SettingError(setting, f"{value!r} is not a positive number", origin)
    return float(value)


def choice(value: Any, allowed: tuple[str, ...], setting: str, origin: str) -> str:
    if value not in allowed:
        raise SettingError(setting, f"{value!r}: one of {', '.join(allowed)}", origin)
    return str(value)


def text(value: Any, setting: str, origin: str) -> str:
    if not isinstance(value, str) or not value:
        raise SettingError(setting, f"{value!r} is not a non-empty string", origin)
    return value


def unknown(table: Mapping[str, Any], known: frozenset[str], setting: str, origin: str, what: str) -> None:
    for key in table:
        if key not in known:
            problem = f"no such key of {what}{did_you_mean(str(key), known, most=1)} (keys: {', '.join(sorted(known))})"
            raise SettingError(f"{setting}.{key}", problem, origin)


def plain(value: Any) -> Any:
    """A TOML (or plugin) value as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
