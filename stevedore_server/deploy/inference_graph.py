"""KServe ``InferenceGraph``s (``serving.kserve.io/v1alpha1``) of the settings' pipelines: ``stevedore-server
manifests`` writes one per pipeline, and an ``InferenceService`` for each model its steps call.

    graph = inference_graph(deployment, pipeline)   # its resource, its InferenceServices, and what it leaves out

How our pipelines map onto KServe's router (``cmd/router/main.go`` of kserve/kserve):

- node types: ``sequence`` -> ``Sequence``, ``switch`` -> ``Switch``, ``ensemble`` -> ``Ensemble``,
  ``splitter`` -> ``Splitter``; the root node is renamed ``root`` (KServe's router starts there);
- a model step -> ``serviceName``: the model's ``InferenceService`` (``service_name``), on the image's runtime,
  which carries ``MLSERVER_MODEL_NAME``: the variable KServe's controller reads for the model's name in the path it
  calls (``/v2/models/NAME/infer``; else the ``InferenceService``'s name, which our server does not serve); a node
  step -> ``nodeName``;
- ``data``: ``$request`` / ``$response`` as such; ``dependency``: ``Hard`` / ``Soft``, always written (KServe's
  router treats a step without one as soft, ours as hard);
- a switch condition -> a GJSON query that exists when it holds (``[@this].#(0.0>5)``), a step without one ->
  ``@this`` (exists for every body: KServe skips a step whose condition is empty);
- splitter weights -> integer percents summing to 100 (KServe's admission webhook asks so);
- step time-outs -> ``routerTimeouts.serviceClient``, the largest (KServe times every service call alike).

What has no KServe form is a note (``Graph.notes``): the command prints it and writes it atop the graph's file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stevedore_server.base.settings.pipelines import REQUEST, RESPONSE, Condition, Node, Pipeline, Step

from .manifests import ANY_MODEL_FORMAT, Deployment, metadata, sample_inference_service

ROUTER_TYPES = {"sequence": "Sequence", "switch": "Switch", "ensemble": "Ensemble", "splitter": "Splitter"}
#: The node KServe's router starts at.
ROOT = "root"
#: A GJSON path that exists in every JSON body: a switch step without a condition always matches.
ALWAYS = "@this"
#: The variable KServe's controller takes the model's name from for the path it calls (MLServer's).
MODEL_NAME_VARIABLE = "MLSERVER_MODEL_NAME"
#: Operators a GJSON query has; ``in`` has none.
GJSON_OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
#: Keys a GJSON path takes as written (others need escapes the router's GJSON may read otherwise).
GJSON_KEY = re.compile(r"\A[A-Za-z0-9_-]+\Z")
#: What a node of KServe's graph receives when two steps hand it different inputs.
MIXED = "$request or $response"


@dataclass(frozen=True)
class Graph:
    """A pipeline's InferenceGraph, the InferenceServices of the models it calls by name, and its notes."""

    name: str
    resource: dict[str, Any]
    services: dict[str, dict[str, Any]]
    notes: tuple[str, ...]

    @property
    def file_name(self) -> str:
        return f"inferencegraph-{self.name}.yaml"


@dataclass
class Context:
    """What one graph's nodes are built with: KServe's node names, each node's input, and the notes so far."""

    deployment: Deployment
    pipeline: Pipeline
    names: dict[str, str]
    inputs: dict[str, str]
    notes: list[str] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    def note(self, node: Node, index: int, step: Step, text: str) -> None:
        self.notes.append(f"pipeline {self.pipeline.name}, node {node.name}, step {index} ({step.target}): {text}")


def inference_graphs(deployment: Deployment, pipelines: Mapping[str, Pipeline]) -> list[Graph]:
    """A graph for each pipeline, each of its own name (two pipelines' names may make the same label)."""
    taken: set[str] = set()
    return [inference_graph(deployment, pipeline, taken) for pipeline in pipelines.values()]


def resources(graphs: list[Graph]) -> dict[str, dict[str, Any]]:
    """Every graph and InferenceService by file name (an InferenceService several graphs call, once)."""
    found: dict[str, dict[str, Any]] = {}
    for graph in graphs:
        found[graph.file_name] = graph.resource
        found |= {f"inferenceservice-{name}.yaml": service for name, service in graph.services.items()}
    return found


def inference_graph(deployment: Deployment, pipeline: Pipeline, taken: set[str] | None = None) -> Graph:
    """``pipeline``'s graph, named as no graph of ``taken`` (which gets its name)."""
    context = Context(deployment, pipeline, node_names(pipeline), node_inputs(pipeline))
    name = free_name(resource_name(pipeline.name), taken if taken is not None else set())
    if taken is not None:
        taken.add(name)
    if name != pipeline.name:
        context.notes.append(f"pipeline {pipeline.name}: named {name} (KServe's names are DNS-1035 labels)")
    nodes = {context.names[node.name]: router(context, node) for node in pipeline.nodes.values()}
    spec: dict[str, Any] = {"nodes": nodes}
    if context.timeouts:
        spec["routerTimeouts"] = {"serviceClient": math.ceil(max(context.timeouts))}
    resource = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": metadata(deployment, name=name) | described(pipeline),
        "spec": spec,
    }
    services = {service_name(deployment, model): model_service(deployment, model) for model, _ in pipeline.models()}
    context.notes += [
        f"pipeline {pipeline.name}: model {model} is not one the image serves (--model)"
        for model, _ in pipeline.models()
        if model not in deployment.models
    ]
    return Graph(name, resource, services, tuple(dict.fromkeys(context.notes)))


def described(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline's description as the graph's annotation."""
    return {"annotations": {"description": pipeline.description}} if pipeline.description else {}


def resource_name(name: str) -> str:
    """``name`` as a DNS-1035 label: lower case, ``-`` for what a label has not, starting with a letter."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = label if label[:1].isalpha() else f"p-{label}"
    return label[:63].rstrip("-")


def service_name(deployment: Deployment, model: str) -> str:
    """The InferenceService of ``model``: named as the manifests' sample (``NAME-MODEL``), as a DNS-1035 label;
    one the label changed ends with a hash of the model's name, so that two models making one label (``iris_proba``,
    ``iris-proba``) get two InferenceServices, not one calling the other's model."""
    wanted = f"{deployment.name}-{model}"
    label = resource_name(wanted)
    if label == wanted:
        return label
    digest = hashlib.blake2b(model.encode("utf-8", "surrogatepass"), digest_size=3).hexdigest()
    return f"{label[:56].rstrip('-')}-{digest}"


def model_service(deployment: Deployment, model: str) -> dict[str, Any]:
    """``model``'s InferenceService on the image's runtime, telling KServe's controller the model's name."""
    env = {"env": [{"name": MODEL_NAME_VARIABLE, "value": model}]}
    # The runtime has a model format for each model the image serves, and one for any (KServe checks it).
    model_format = model if model in deployment.models else ANY_MODEL_FORMAT
    service = sample_inference_service(deployment, model_format, deployment.name, env)
    service["metadata"]["name"] = service_name(deployment, model)
    return service


# -- nodes --------------------------------------------------------------------------


def node_names(pipeline: Pipeline) -> dict[str, str]:
    """KServe's name of each node: ``root`` for the pipeline's root; another node called ``root`` renamed."""
    names = {pipeline.root: ROOT}
    for name in pipeline.nodes:
        if name != pipeline.root:
            names[name] = name if name != ROOT else free_name(f"{ROOT}-node", set(pipeline.nodes))
    return names


def free_name(wanted: str, taken: set[str]) -> str:
    candidate, number = wanted, 1
    while candidate in taken:
        number += 1
        candidate = f"{wanted}-{number}"
    return candidate


def node_inputs(pipeline: Pipeline) -> dict[str, str]:
    """What KServe's router hands each node reached from the root: ``$request`` (the graph's input) or
    ``$response`` (a sequence's previous answer); ``MIXED`` for a node reached with both."""
    inputs = {pipeline.root: REQUEST}
    pending = [pipeline.root]
    while pending:
        node = pipeline.nodes.get(pending.pop())
        if node is None:
            continue
        for index, step in enumerate(node.steps):
            if step.node is None:
                continue
            given = sent_by(node, index, step, inputs[node.name])
            known = inputs.get(step.node)
            if known is None or (known != given and known != MIXED):
                inputs[step.node] = given if known is None else MIXED
                pending.append(step.node)
    return inputs


def sent_by(node: Node, index: int, step: Step, node_input: str) -> str:
    """What KServe hands ``step``: the previous answer for a later step of a sequence with ``$response``."""
    if node.type == "sequence" and index > 0 and (step.data is None or step.data.source == RESPONSE):
        return RESPONSE
    return node_input


def router(context: Context, node: Node) -> dict[str, Any]:
    if node.reducer is not None:
        context.notes.append(
            f"pipeline {context.pipeline.name}, node {node.name}: the reducer {node.reducer!r} has no KServe form "
            "(KServe's Ensemble answers each step's answer under its name)"
        )
    steps = [kserve_step(context, node, index, step) for index, step in enumerate(node.steps)]
    if node.type == "splitter":
        for step, percent in zip(steps, percents(context, node), strict=True):
            step["weight"] = percent
    return {"routerType": ROUTER_TYPES[node.type], "steps": steps}


def kserve_step(context: Context, node: Node, index: int, step: Step) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if node.type == "ensemble" or step.name is not None:
        found["name"] = step.key  # an Ensemble merges the answers by step name, as ours by step key
    found |= target(context, node, index, step)
    data = data_of(context, node, index, step)
    if data is not None:
        found["data"] = data
    if node.type == "switch":
        condition = ALWAYS if step.condition is None else gjson_condition(context, node, index, step)
        if condition is not None:
            found["condition"] = condition
    found["dependency"] = "Soft" if step.soft else "Hard"
    dependency_notes(context, node, index, step)
    if step.timeout is not None:
        timeout_note(context, node, index, step)
    return found


def target(context: Context, node: Node, index: int, step: Step) -> dict[str, str]:
    if step.node is not None:
        if step.node not in context.names:
            context.note(node, index, step, f"names no node of the pipeline ({', '.join(context.names)})")
        return {"nodeName": context.names.get(step.node, step.node)}
    model = str(step.model)
    if step.version is not None:
        context.note(node, index, step, f"version {step.version}: KServe calls the model's default version")
    return {"serviceName": service_name(context.deployment, model)}


def data_of(context: Context, node: Node, index: int, step: Step) -> str | None:
    """KServe's ``data`` of a sequence's later step (its other steps get the node's input whatever it says)."""
    node_input = context.inputs.get(node.name, REQUEST)
    if node.type != "sequence" or index == 0:
        if step.data is not None and (step.data.pointer or step.data.source != node_input):
            context.note(node, index, step, f"data {step.data}: KServe hands this step the node's input ({node_input})")
        return None
    source = RESPONSE if step.data is None else step.data.source
    if source == RESPONSE:
        context.notes.append(
            f"pipeline {context.pipeline.name}: KServe hands a $response step the previous step's whole answer (an "
            "Open Inference Protocol response), where stevedore-server hands it the predictions"
        )
    if step.data is not None and step.data.pointer:
        context.note(node, index, step, f"data {step.data}: no JSON pointer in KServe, the step receives {source}")
    if source == REQUEST and node_input != REQUEST:
        context.note(node, index, step, f"$request: KServe's is the node's input ({node_input}), not the pipeline's")
    return source


def dependency_notes(context: Context, node: Node, index: int, step: Step) -> None:
    if step.soft and node.type == "sequence" and index < len(node.steps) - 1:
        context.note(
            node, index, step,
            "soft: when it fails, KServe hands the next step its error answer, not the previous successful one",
        )  # fmt: skip
    if step.soft and node.type == "ensemble":
        context.note(node, index, step, "soft: when it fails, KServe's Ensemble keeps its error answer under its name")


def timeout_note(context: Context, node: Node, index: int, step: Step) -> None:
    if step.node is not None:
        context.note(node, index, step, f"timeout {step.timeout:g} s: KServe has none for a node")
        return
    context.timeouts.append(float(step.timeout or 0))
    context.note(
        node, index, step,
        f"timeout {step.timeout:g} s: KServe's is one for every step's call (routerTimeouts.serviceClient, the "
        "largest, in whole seconds)",
    )  # fmt: skip


# -- switch conditions and splitter weights -----------------------------------------------


def gjson_condition(context: Context, node: Node, index: int, step: Step) -> str | None:
    """The condition as a GJSON query that exists when it holds; None (the step never taken) when it has none."""
    condition: Condition = step.condition  # type: ignore[assignment]
    node_input = context.inputs.get(node.name, REQUEST)
    if condition.source != node_input:
        context.note(
            node, index, step, f"condition on {condition.source}: KServe's Switch tests its input ({node_input})"
        )
    problem = gjson_problem(condition)
    if problem is not None:
        context.note(node, index, step, f"condition {condition.pointer} {condition.op} {condition.value!r}: {problem}")
        return None
    context.notes.append(
        f"pipeline {context.pipeline.name}: KServe's Switch reads a condition's pointer in the body it routes (an "
        "Open Inference Protocol request), where stevedore-server reads it in the models' JSON payload"
    )
    path = ".".join(json_pointer_keys(condition.pointer))
    return f"[@this].#({path}{condition.op}{gjson_literal(condition.value)})"


def gjson_problem(condition: Condition) -> str | None:
    if condition.op not in GJSON_OPERATORS:
        return f"GJSON has no {condition.op!r}: KServe never takes the step"
    if not all(GJSON_KEY.match(key) for key in json_pointer_keys(condition.pointer)):
        return "a key of the pointer GJSON reads otherwise: KServe never takes the step"
    if isinstance(condition.value, bool) and condition.op not in ("==", "!="):
        return "GJSON compares true and false by == and != only: KServe never takes the step"
    if not isinstance(condition.value, (bool, int, float, str)):
        return "GJSON compares with a string, a number, true or false: KServe never takes the step"
    return None


def json_pointer_keys(pointer: str) -> list[str]:
    """The keys of a JSON pointer (RFC 6901: ``~1`` is ``/``, ``~0`` is ``~``)."""
    return [key.replace("~1", "/").replace("~0", "~") for key in pointer.split("/")[1:]]


def gjson_literal(value: bool | float | str) -> str:
    """A GJSON query's value: JSON's own text of it (a string in quotes, ``true``, a number)."""
    return json.dumps(value)


def percents(context: Context, node: Node) -> list[int]:
    """The steps' weights as integer percents summing to 100, by largest remainder."""
    weights = [float(step.weight or 0) for step in node.steps]
    exact = [weight * 100 / sum(weights) for weight in weights]
    found = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(exact)), key=lambda index: found[index] - exact[index])
    for index in by_remainder[: 100 - sum(found)]:
        found[index] += 1
    if 0 in found:
        context.notes.append(f"pipeline {context.pipeline.name}, node {node.name}: a step of weight 0 % is never taken")
    if any(not math.isclose(share, percent) for share, percent in zip(exact, found, strict=True)):
        shown = ", ".join(f"{weight:g}" for weight in weights)
        context.notes.append(
            f"pipeline {context.pipeline.name}, node {node.name}: weights {shown} rounded to percents "
            f"{', '.join(map(str, found))} (KServe's are whole percents summing to 100)"
        )
    return found
