"""The package's layers: each subpackage says what it owns, and imports only go down the layers.

Read from the source (``imports``): every import counts, those under ``TYPE_CHECKING`` and inside functions too,
and importing a module runs its packages' ``__init__`` files, so those count as imported.
"""

from __future__ import annotations

import ast
import importlib
import pickle
import sys
from pathlib import Path

import pytest

import stevedore_server
from stevedore_server.base.settings import Settings
from stevedore_server.processes.isolation import selection_orders
from stevedore_server.processes.spawn import receive, start_worker
from stevedore_server.processes.wire import PROTOCOL

from . import imports

PACKAGE = Path(stevedore_server.__file__).parent
ROOT = "stevedore_server"

#: The layers, lowest first: a module may import modules of its own layer and of the layers below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("base",)),
    # The plugin contract (``predictor``, ``model_files`` for runtimes, ``hookspecs``, and the package's own
    # ``__init__``, which re-exports ``Predictor`` and ``hookimpl``) is public and stays at the top of the tree;
    # it belongs to this layer.
    ("plugins", ("plugins", "predictor", "model_files", "hookspecs", "")),
    ("processes", ("processes",)),
    ("core", ("core",)),
    ("jobs", ("jobs",)),
    ("front ends", ("frontends",)),
    ("plugin-author kit and deployment", ("kit", "testing", "pytest_plugin", "deploy")),
    ("serving process", ("process",)),
    ("Ray Serve", ("rayserve",)),
    ("commands", ("cli", "__main__", "worker")),
]
#: Old paths that plugins and their tests import, kept as redirects with a deprecation warning (imported by
#: nothing of ours), and where each went.
SHIMS = {
    "app": "frontends.app",
    "discovery": "plugins.discovery",
    "errors": "base.errors",
    "serialization": "base.serialization",
    "settings": "base.settings",
    "validation": "base.validation",
}
#: Within the front ends, the transports that must not reach into HTTP: gRPC is served without Starlette's
#: request machinery, and shares with REST only the codec and protocol modules of ``frontends.v2``.
GRPC_MODULES = (
    "frontends.grpc_server",
    "frontends.grpc_context",
    "frontends.grpc_health",
    "frontends.v2.grpc_service",
    "frontends.v2.grpc_codec",
)
HTTP_ONLY = ("frontends.web", "frontends.v2.rest", "frontends.v2.generate", "frontends.app", "frontends.console")
#: Library names no module of ours may take (``import http`` inside the package would be ambiguous to a reader).
LIBRARY_NAMES = {"http", "grpc", "logging", "json", "asyncio", "signal", "typing", "types", "email", "test"}


def layer_of(module: str) -> int:
    relative = module.removeprefix(ROOT).removeprefix(".")
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if relative == prefix or (prefix and relative.startswith(f"{prefix}.")):
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (or SHIMS)")


def is_shim(module: str) -> bool:
    return module.removeprefix(f"{ROOT}.") in SHIMS


def inside(module: str, prefixes: tuple[str, ...]) -> bool:
    relative = module.removeprefix(f"{ROOT}.")
    return any(relative == prefix or relative.startswith(f"{prefix}.") for prefix in prefixes)


def graph() -> dict[str, set[str]]:
    return imports.graph(packages=True)


def test_the_graph_is_read_whole() -> None:
    edges = graph()
    assert "stevedore_server.core.served_models" in edges["stevedore_server.core.inference"]
    assert "stevedore_server.base.lifecycle" in edges["stevedore_server.base.health"]  # TYPE_CHECKING counts
    assert "stevedore_server.core" in edges["stevedore_server.core.inference"]  # the package's __init__ counts
    assert "stevedore_server.plugins.loading" in edges["stevedore_server.processes.worker"]  # function-level


def test_imports_only_go_down_the_layers() -> None:
    wrong = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph().items())
        if not is_shim(module)
        for target in sorted(targets)
        if not is_shim(target) and layer_of(target) > layer_of(module)
    ]
    assert wrong == []


def test_nothing_imports_the_deprecated_paths() -> None:
    users = [
        f"{module} imports {target}" for module, targets in graph().items() for target in targets if is_shim(target)
    ]
    assert users == []


def test_grpc_reaches_into_nothing_of_http() -> None:
    edges = graph()
    wrong = [
        f"{module} imports {target}"
        for module in edges
        if inside(module, GRPC_MODULES)
        for target in edges[module]
        if inside(target, HTTP_ONLY)
    ]
    assert wrong == []
    for module, path in imports.modules().items():
        if inside(module, GRPC_MODULES):
            assert "starlette" not in path.read_text(), module


def test_every_subpackage_says_what_it_owns_and_what_it_may_import() -> None:
    for path in PACKAGE.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring) > 80, f"{path.relative_to(PACKAGE)} has no docstring saying what it owns"
        if path.parent != PACKAGE and path.parent.parent == PACKAGE:  # a layer's own package
            assert "import" in docstring, f"{path.relative_to(PACKAGE)} does not say what it may import"


def test_few_modules_stay_at_the_top_and_none_takes_a_library_name() -> None:
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert len(top) <= 15, top
    assert {path.stem for path in PACKAGE.rglob("*.py")} & LIBRARY_NAMES == set()
    assert {path.name for path in PACKAGE.rglob("*") if path.is_dir()} & LIBRARY_NAMES == set()


@pytest.mark.parametrize("old", SHIMS)
def test_an_old_path_is_the_moved_module_and_says_where_it_went(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, f"{ROOT}.{old}", raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{ROOT}\.{old} is deprecated: import {ROOT}\.{SHIMS[old]}"):
        module = importlib.import_module(f"{ROOT}.{old}")
    assert module is importlib.import_module(f"{ROOT}.{SHIMS[old]}")
    exec(f"from {ROOT}.{old} import *", {})  # and a star import, as old code may do


#: What a model's worker process must not import: the web, gRPC and database stacks of the server.
SERVER_STACKS = {"starlette", "fastapi", "uvicorn", "grpc", "sqlalchemy", "alembic", "jinja2", "prometheus_client"}


def test_a_worker_process_loads_and_serves_its_model_without_the_server_stacks(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real worker process (``python -m stevedore_server.worker``, as ``processes = N`` starts it) loads,
    self-tests and answers the example plugin's model; its own ``-X importtime`` lines name what it imported."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    orders = {"mode": "serve", "model": "iris", "version": "1", **selection_orders(Settings())}
    process, connection = start_worker(sys.executable, orders)
    with connection:
        loaded = receive(connection, process, 120, "loading its model")
        connection.send_bytes(pickle.dumps(("predict", [[5.1, 3.5, 1.4, 0.2]], "req-1"), protocol=PROTOCOL))
        reply = receive(connection, process, 60, "answering")
    process.wait(10)
    imported = {
        line.rsplit("|", 1)[1].strip() for line in capfd.readouterr().err.splitlines() if "import time:" in line
    }
    assert loaded["state"] == "ready" and reply[0] == "ok" and list(reply[1]) == [0], (loaded, reply)
    assert {"stevedore_server.processes.worker", "stevedore_server.plugins.loading", "sklearn"} <= imported
    assert sorted(name for name in imported if name.split(".")[0] in SERVER_STACKS) == []
