"""Check KServe manifests against KServe's published API types, strictly: run in a virtual environment that has
the ``kserve`` and ``kubernetes`` distributions (installed without their dependencies).

    python check_manifests.py FILE.yaml ...    # prints one problem a line; exit 1 if any

KServe's Python SDK carries the API types generated from the same definitions as its CRDs' schemas: each
class's ``attribute_map`` names every field it has, and ``openapi_types`` the type of each (core Kubernetes
types come from the ``kubernetes`` client). A field that no type has is a problem, as the API server's
structural schema would reject it. Only the model classes are imported (the packages' own ``__init__`` would
import the whole SDK and its dependencies).

An ``InferenceGraph`` is also held to the rules of KServe's admission webhook, which its types do not carry
(``pkg/apis/serving/v1alpha1/inference_graph_validation.go``): a DNS-1035 name, a node named ``root``, step names
unique within a node, exactly one target a step, and a splitter's weights, each given, summing to 100; and to one
rule of its router (``cmd/router/main.go``): a step's ``nodeName`` names a node of the graph.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import yaml

PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}
#: The top-level types of the resources checked.
KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "InferenceGraph"): "V1alpha1InferenceGraph",
}
#: KServe's ``GraphNameFmt``.
GRAPH_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
TARGETS = ("nodeName", "serviceName", "serviceUrl")


def package_without_init(name: str) -> None:
    """Make ``name`` importable as a bare package: its modules load, its ``__init__`` does not run."""
    spec = importlib.util.find_spec(name.split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).parent
    for depth in range(1, name.count(".") + 2):
        part = ".".join(name.split(".")[:depth])
        module = types.ModuleType(part)
        module.__path__ = [str(root.joinpath(*part.split(".")))]
        sys.modules[part] = module


def class_modules() -> dict[str, str]:
    """Each API type's module, found by reading the model packages' files (their names do not follow the
    class names' acronyms: ``V1HTTPGetAction`` lives in ``v1_http_get_action``)."""
    found: dict[str, str] = {}
    for package in ("kserve.models", "kubernetes.client.models"):
        directory = Path(sys.modules[package.rsplit(".", 1)[0]].__path__[0]) / "models"
        for file in directory.glob("*.py"):
            for name in re.findall(r"^class (\w+)", file.read_text(), flags=re.MULTILINE):
                found.setdefault(name, f"{package}.{file.stem}")
    return found


MODULES: dict[str, str] = {}


def model_class(type_name: str) -> Any:
    if not MODULES:
        MODULES.update(class_modules())
    if type_name not in MODULES:
        raise LookupError(f"no API type {type_name}")
    return getattr(importlib.import_module(MODULES[type_name]), type_name)


def check(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    if value is None:
        return
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            problems.append(f"{path}: a list was expected")
            return
        for index, item in enumerate(value):
            check(item, type_name[5:-1], f"{path}[{index}]", problems)
    elif type_name.startswith(("dict(", "Dict[")):  # dict(str, X) in KServe's SDK, Dict[str, X] in Kubernetes'
        if not isinstance(value, dict):
            problems.append(f"{path}: a mapping was expected")
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check(item, inner, f"{path}.{key}", problems)
    elif type_name in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[type_name]) or (type_name == "int" and isinstance(value, bool)):
            problems.append(f"{path}: {value!r} is not {type_name}")
    else:
        check_object(value, model_class(type_name), path, problems)


def check_object(value: Any, cls: Any, path: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: an object ({cls.__name__}) was expected")
        return
    fields = {json_name: attribute for attribute, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: unknown field (not in {cls.__name__})")
            continue
        check(item, cls.openapi_types[fields[key]], f"{path}.{key}", problems)


def check_graph(graph: dict[str, Any], path: str, problems: list[str]) -> None:
    """The webhook's rules and the router's for an InferenceGraph."""
    name = graph.get("metadata", {}).get("name", "")
    if not GRAPH_NAME.match(name):
        problems.append(f"{path}.metadata.name: {name!r} is not a DNS-1035 label")
    nodes = graph.get("spec", {}).get("nodes") or {}
    if "root" not in nodes:
        problems.append(f"{path}.spec.nodes: no node named root")
    for node_name, node in nodes.items():
        steps = node.get("steps") or []
        where = f"{path}.spec.nodes.{node_name}"
        names = [step["name"] for step in steps if step.get("name")]
        if len(names) != len(set(names)):
            problems.append(f"{where}: two steps have the same name")
        for index, step in enumerate(steps):
            if sum(1 for target in TARGETS if step.get(target)) != 1:
                problems.append(f"{where}.steps[{index}]: not exactly one of {', '.join(TARGETS)}")
            if step.get("nodeName") and step["nodeName"] not in nodes:
                problems.append(f"{where}.steps[{index}].nodeName: no node {step['nodeName']!r}")
        if node.get("routerType") == "Splitter":
            weights = [step.get("weight") for step in steps]
            if None in weights or sum(weights) != 100:
                problems.append(f"{where}: a Splitter's steps' weights, each given, sum to 100 ({weights})")


def main(files: list[str]) -> int:
    package_without_init("kserve")
    package_without_init("kubernetes.client")
    problems: list[str] = []
    for file in files:
        resource = yaml.safe_load(Path(file).read_text())
        kind = KINDS.get((resource.get("apiVersion"), resource.get("kind")))
        if kind is None:
            problems.append(f"{file}: not a KServe resource this checks")
            continue
        check(resource, kind, Path(file).name, problems)
        if kind == "V1alpha1InferenceGraph":
            check_graph(resource, Path(file).name, problems)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
