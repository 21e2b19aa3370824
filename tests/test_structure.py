"""The structure the code promises: no import cycle, one place that validates, an app factory that changes
nothing process-wide."""

from __future__ import annotations

import ast
import gc
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

import stevedore_server

from . import imports
from .helpers import Registers
from .predictors import RowSum

PACKAGE = Path(stevedore_server.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_itself_through_others() -> None:
    """No cycle, ``TYPE_CHECKING`` imports and a package's ``__init__`` included (``tests/imports.py``)."""
    graph = imports.graph()
    assert "stevedore_server.core.served_models" in graph["stevedore_server.core.inference"]  # the graph is read at all
    assert "stevedore_server.plugins.host" in graph["stevedore_server.hookspecs"]  # TYPE_CHECKING imports count
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        for target in graph[name]:
            if target in trail:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in done:
                visit(target, [*trail, target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_payloads_are_validated_in_one_place() -> None:
    callers = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if path.name != "validation.py"  # where the validators are made (and their schemas checked)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "validate"
    )
    assert set(callers) == {"stevedore_server.core.inference"}, callers


def test_the_app_factory_changes_nothing_process_wide(make_client: Callable[..., TestClient]) -> None:
    handler, srcfile = signal.getsignal(signal.SIGTERM), logging._srcfile
    client = make_client(Registers(RowSum()))
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 200
    assert gc.get_freeze_count() == 0
    assert signal.getsignal(signal.SIGTERM) is handler
    assert logging._srcfile == srcfile


def test_every_error_meant_for_a_person_is_defined_in_errors_py() -> None:
    exceptions = {"Exception", "StevedoreError", "ClientError", "PluginError", "AssertionError", "ValueError"}
    elsewhere = sorted(
        f"{module_name(path)}.{node.name}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(base, ast.Name) and (base.id in exceptions or base.id.endswith("Error")) for base in node.bases
        )
    )
    assert elsewhere == []
