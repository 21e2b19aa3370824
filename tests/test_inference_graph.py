"""``stevedore-server manifests`` writes a KServe ``InferenceGraph`` for each pipeline of the settings, with an
``InferenceService`` for each model its steps call, valid against KServe's CRD schema (vendored in tests/kserve/,
strictly: an unknown field fails) and KServe's API types and admission webhook rules (its SDK, in an environment
of its own); what KServe cannot express is printed and written atop the graph's file."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner, Result

from stevedore_server.cli import main

from .documentation import block, page
from .pipelines_server import ISSUE
from .test_manifests import check_kserve, kserve_types  # noqa: F401 (the fixture)

#: KServe's CustomResourceDefinition of InferenceGraph (its origin in the file's header).
CRD = Path(__file__).parent / "kserve" / "serving.kserve.io_inferencegraphs.yaml"
#: What KServe has no form for, one thing a step.
AWKWARD_PIPELINES = """
[pipelines.Mixed_Bag]
root = "start"
[pipelines.Mixed_Bag.nodes.start]
type = "sequence"
steps = [{ model = "iris:1.0.0" }, { node = "vote", data = "$request/0" }, { node = "root" }]
[pipelines.Mixed_Bag.nodes.vote]
type = "ensemble"
reducer = "mean"
steps = [{ model = "iris" }, { model = "iris-proba", dependency = "soft" }]
[pipelines.Mixed_Bag.nodes.root]
type = "switch"
steps = [{ node = "split", condition = { pointer = "/0/0", op = "in", value = [1, 2] } },
         { model = "iris", condition = { pointer = "/a.b", op = "==", value = "x" } },
         { model = "hooked-sum", condition = { pointer = "/kind", op = "!=", value = "rose" } }]
[pipelines.Mixed_Bag.nodes.split]
type = "splitter"
steps = [{ model = "iris", weight = 1 }, { model = "iris-proba", weight = 2 }]
"""
MODELS = ["--model", "iris", "--model", "iris-proba", "--model", "hooked-sum"]


def write_graphs(tmp_path: Path, pipelines: str) -> tuple[dict[str, Any], Result]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = tmp_path / "settings.toml"
    settings.write_text(pipelines)
    output = tmp_path / "k8s"
    args = ["manifests", "--image", "registry.example/models:1", "--output", str(output), "--config", str(settings)]
    result = CliRunner().invoke(main, [*args, *MODELS])
    assert result.exit_code == 0, result.output
    return {path.name: yaml.safe_load(path.read_text()) for path in output.iterdir()}, result


@pytest.mark.unit
def test_the_issues_pipelines_become_inference_graphs_of_inference_services(tmp_path: Path) -> None:
    written, result = write_graphs(tmp_path, ISSUE)
    assert written["inferencegraph-iris-sum.yaml"]["spec"] == {
        "nodes": {
            "root": {
                "routerType": "Sequence",
                "steps": [
                    {"serviceName": "stevedore-server-iris-proba", "dependency": "Hard"},
                    {"serviceName": "stevedore-server-hooked-sum", "data": "$response", "dependency": "Hard"},
                ],
            }
        }
    }
    router = written["inferencegraph-router.yaml"]
    assert (router["apiVersion"], router["kind"]) == ("serving.kserve.io/v1alpha1", "InferenceGraph")
    assert router["spec"] == {
        "nodes": {
            "root": {  # the pipeline's root, `pick`: KServe's router starts at the node named root
                "routerType": "Switch",
                "steps": [
                    {"nodeName": "chain", "condition": "[@this].#(0.0>5)", "dependency": "Hard"},
                    {"serviceName": "stevedore-server-iris", "condition": "@this", "dependency": "Hard"},
                ],
            },
            "chain": {
                "routerType": "Sequence",
                "steps": [
                    {"serviceName": "stevedore-server-iris-proba", "dependency": "Hard"},
                    {"serviceName": "stevedore-server-hooked-sum", "data": "$response", "dependency": "Soft"},
                ],
            },
        },
        "routerTimeouts": {"serviceClient": 2},
    }
    # Each model a step calls has its InferenceService, which tells KServe the model's name for its path.
    for model in ("iris", "iris-proba", "hooked-sum"):
        predictor = written[f"inferenceservice-stevedore-server-{model}.yaml"]["spec"]["predictor"]["model"]
        assert predictor["runtime"] == "stevedore-server" and predictor["modelFormat"] == {"name": model}
        assert predictor["env"] == [{"name": "MLSERVER_MODEL_NAME", "value": model}]
    # The per-step time-out is KServe's one for every call: said, on the terminal and atop the file.
    timeout = "pipeline router, node chain, step 0 (iris-proba): timeout 2 s: KServe's is one for every step's call"
    assert f"warning: not in KServe's InferenceGraph: {timeout}" in result.output
    assert f"# {timeout}" in (tmp_path / "k8s" / "inferencegraph-router.yaml").read_text()


@pytest.mark.unit
def test_what_kserve_cannot_express_is_reported(tmp_path: Path) -> None:
    written, result = write_graphs(tmp_path, AWKWARD_PIPELINES)
    graph = written["inferencegraph-mixed-bag.yaml"]
    nodes = graph["spec"]["nodes"]
    assert set(nodes) == {"root", "vote", "root-node", "split"}  # a node called root, not the root, renamed
    assert nodes["root"]["steps"][2] == {"nodeName": "root-node", "data": "$response", "dependency": "Hard"}
    assert nodes["vote"]["steps"] == [  # merged by step name, as ours by step key
        {"name": "iris", "serviceName": "stevedore-server-iris", "dependency": "Hard"},
        {"name": "iris-proba", "serviceName": "stevedore-server-iris-proba", "dependency": "Soft"},
    ]
    switch = nodes["root-node"]["steps"]
    assert "condition" not in switch[0] and "condition" not in switch[1]  # `in`, a key with a dot: never taken
    assert switch[2]["condition"] == '[@this].#(kind!="rose")'
    assert [step["weight"] for step in nodes["split"]["steps"]] == [33, 67]
    expected = [
        "pipeline Mixed_Bag: named mixed-bag (KServe's names are DNS-1035 labels)",
        "node start, step 0 (iris:1.0.0): version 1.0.0: KServe calls the model's default version",
        "node start, step 1 (vote): data $request/0: no JSON pointer in KServe, the step receives $request",
        "node vote: the reducer 'mean' has no KServe form",
        "node vote, step 1 (iris-proba): soft: when it fails, KServe's Ensemble keeps its error answer",
        "node root, step 0 (split): condition /0/0 in [1, 2]: GJSON has no 'in': KServe never takes the step",
        "node root, step 1 (iris): condition /a.b == 'x': a key of the pointer GJSON reads otherwise",
        "node split: weights 1, 2 rounded to percents 33, 67",
    ]
    for note in expected:
        assert note in result.output, note
    assert "timeout" not in result.output and "routerTimeouts" not in graph["spec"]


@pytest.mark.unit
def test_each_graph_and_service_has_a_name_kserve_takes(tmp_path: Path) -> None:
    """Two pipelines whose names make the same label get a graph each; a model the image does not serve gets an
    InferenceService of the runtime's any-model format (KServe refuses a format its runtime lacks), and a note."""
    pipelines = """
    [pipelines.A_b]
    type = "ensemble"
    steps = [{ model = "iris" }, { model = "Not_Served" }]
    [pipelines.a-b]
    type = "splitter"
    steps = [{ model = "iris", weight = 0.5 }, { model = "iris-proba", weight = 1.5 }]
    """
    written, result = write_graphs(tmp_path, pipelines.replace("\n    ", "\n"))
    assert written["inferencegraph-a-b.yaml"]["metadata"]["name"] == "a-b"
    assert written["inferencegraph-a-b-2.yaml"]["spec"]["nodes"]["root"]["steps"] == [
        {"serviceName": "stevedore-server-iris", "weight": 25, "dependency": "Hard"},
        {"serviceName": "stevedore-server-iris-proba", "weight": 75, "dependency": "Hard"},
    ]  # whole percents already: no note
    service = written["inferenceservice-stevedore-server-not-served-2e45ab.yaml"]["spec"]["predictor"]["model"]
    assert service["modelFormat"] == {"name": "stevedore"}
    assert service["env"] == [{"name": "MLSERVER_MODEL_NAME", "value": "Not_Served"}]
    assert "pipeline A_b: model Not_Served is not one the image serves (--model)" in result.output
    assert "pipeline a-b: named a-b-2" in result.output and "rounded" not in result.output


def strict(schema: Any) -> Any:
    """The schema with every object closed to the properties it names, as the API server's structural schema
    prunes (and kubectl's strict field validation refuses) any other."""
    if isinstance(schema, dict):
        closed = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_schema() -> Any:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    return strict(version["schema"]["openAPIV3Schema"])


@pytest.mark.unit
def test_the_inference_graphs_are_valid_against_kserves_crd_schema(tmp_path: Path) -> None:
    schema = crd_schema()
    written = write_graphs(tmp_path / "issue", ISSUE)[0] | write_graphs(tmp_path / "awkward", AWKWARD_PIPELINES)[0]
    graphs = [resource for resource in written.values() if resource["kind"] == "InferenceGraph"]
    assert len(graphs) == 3
    for graph in graphs:
        jsonschema.validate(graph, schema)
    misspelt = copy.deepcopy(graphs[0])
    misspelt["spec"]["nodes"]["root"]["steps"][0]["serviceNmae"] = "x"
    with pytest.raises(jsonschema.ValidationError, match="serviceNmae"):
        jsonschema.validate(misspelt, schema)
    unknown_type = copy.deepcopy(graphs[0])
    unknown_type["spec"]["nodes"]["root"]["routerType"] = "Chain"
    with pytest.raises(jsonschema.ValidationError, match="Chain"):
        jsonschema.validate(unknown_type, schema)


@pytest.mark.venv
def test_the_inference_graphs_match_kserves_api_types_and_webhook(tmp_path: Path, kserve_types: Path) -> None:  # noqa: F811
    for pipelines in (ISSUE, AWKWARD_PIPELINES):
        write_graphs(tmp_path / str(len(pipelines)), pipelines)
    files = [*tmp_path.glob("*/k8s/inferencegraph-*.yaml"), *tmp_path.glob("*/k8s/inferenceservice-*.yaml")]
    result = check_kserve(kserve_types, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    graph = yaml.safe_load(next(tmp_path.glob("*/k8s/inferencegraph-mixed-bag.yaml")).read_text())
    graph["spec"]["nodes"]["split"]["steps"][0]["weight"] = 34  # 101 %
    graph["spec"]["nodes"]["vote"]["steps"][0]["node_name"] = "split"  # the SDK's attribute, not the field
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(graph))
    result = check_kserve(kserve_types, tmp_path / "broken.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "node_name: unknown field (not in V1alpha1InferenceStep)" in result.stdout
    assert "a Splitter's steps' weights, each given, sum to 100" in result.stdout


@pytest.mark.unit
def test_the_kserve_pages_graph_is_what_manifests_writes(tmp_path: Path) -> None:
    """The KServe page's pipeline, command and graph: the command run as shown (its folder and file here) writes
    the graph shown, notes included, and every file its ``kubectl apply`` names."""
    kserve_page = page("deployment/kserve.md")
    (tmp_path / "pipelines.toml").write_text(block("toml", "[pipelines.router]", kserve_page))
    shown = block("sh", "--config pipelines.toml", kserve_page).replace("\\\n", " ")
    manifests_line, kubectl_line = shown.splitlines()
    words = shlex.split(manifests_line)
    replacements = {"k8s/": str(tmp_path / "k8s"), "pipelines.toml": str(tmp_path / "pipelines.toml")}
    result = CliRunner().invoke(main, [replacements.get(word, word) for word in words[1:]])
    assert words[0] == "stevedore-server" and result.exit_code == 0, result.output
    written = (tmp_path / "k8s" / "inferencegraph-router.yaml").read_text()
    assert written == block("yaml", "kind: InferenceGraph", kserve_page)
    applied = [word for word in shlex.split(kubectl_line) if word.startswith("k8s/")]
    assert len(applied) == 5 and all((tmp_path / file).is_file() for file in applied)
