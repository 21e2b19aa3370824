"""Schemathesis against our own ``/openapi.json``, served by a real server with the example plugin.

Schemathesis runs as its command, ``schemathesis run``, the way a CI job runs
it: its pytest loader for a server started by a fixture
(``schemathesis.pytest.from_fixture``) fails under pytest 9 (it sets
``request.node._nodeid``, which pytest no longer has), and loading the document
at import would start a server on every collection. The run is bounded (25
generated cases per operation, besides the examples and the coverage phase's
boundary cases) and deterministic, so the same requests are sent on every run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .venvs import Server, example_server_at

#: The run's settings, as a ``schemathesis.toml``: nothing read from the developer's own configuration.
pytestmark = pytest.mark.server

CONFIG = """
wait-for-schema = 30
request-timeout = 30

[generation]
max-examples = 25
deterministic = true
mode = "all"
database = "none"

[cache]
enabled = false

[phases.stateful]
enabled = false

[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
"""

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the example plugin for the fuzzer alone: its requests load and unload models, which must not
    reach the session's shared ``example_server``."""
    with example_server_at(tmp_path_factory.mktemp("schemathesis-server") / "server.log") as running:
        yield running


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation of an OpenAPI document."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def server_errors(server: Server) -> str:
    """The server log without its access lines: the tracebacks of the 500s, if any."""
    return "\n".join(line for line in server.log().splitlines() if " INFO " not in line)[-20_000:]


def test_every_templated_path_declares_its_parameters(server: Server) -> None:
    """OpenAPI requires each ``{name}`` of a path to be a declared path parameter."""
    document = httpx.get(server.url + "/openapi.json").json()
    undeclared = []
    for method, path, operation in operations(document):
        template = {part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")}
        parameters = operation.get("parameters", []) + document["paths"][path].get("parameters", [])
        declared = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
        if template - declared:
            undeclared.append(f"{method.upper()} {path}: {', '.join(sorted(template - declared))}")
    assert undeclared == [], "path parameters not declared:\n" + "\n".join(undeclared)


def test_generated_requests_get_documented_answers_and_no_5xx(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    # The working directory is the test's own: schemathesis writes reports and caches there.
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config)]
    result = subprocess.run(
        [*command, "run", server.url + "/openapi.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n--- server errors\n{server_errors(server)}"
    document = httpx.get(server.url + "/openapi.json").json()
    count = len(list(operations(document)))
    assert re.search(rf"^\s*Tested: {count}$", result.stdout, re.MULTILINE), result.stdout  # every one of them
