"""The site's client examples (``tritonclient.http`` and ``tritonclient.grpc``, scripts on the pages of the Open
Inference Protocol) run against the real example server, and every line printing a result prints the result its
comment shows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .documentation import README, block, page
from .venvs import Server

EXAMPLES = [
    block("python", "tritonclient.http", page("protocols/v2-rest.md")),
    block("python", "tritonclient.grpc", page("protocols/v2-grpc.md")),
]


def run_example(script: str, url: str, grpc_target: str = "") -> int:
    """Run ``script`` in a Python of its own against the server at ``url`` (and ``grpc_target``); each line
    ``print(...)  # RESULT`` must print ``RESULT``. Returns how many results were checked."""
    addresses = {"127.0.0.1:8000": url.removeprefix("http://"), "127.0.0.1:8081": grpc_target}
    for documented, real in addresses.items():
        script = script.replace(documented, real)
    shown = [line.partition("  # ")[2] for line in script.splitlines() if line.startswith("print(")]
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == shown
    return len(shown)


def test_the_site_has_an_http_and_a_grpc_example() -> None:
    assert [("tritonclient.http" in s, "tritonclient.grpc" in s) for s in EXAMPLES] == [(True, False), (False, True)]


@pytest.mark.parametrize("script", EXAMPLES, ids=["http", "grpc"])
def test_a_client_example_gives_the_results_it_shows(script: str, example_server: Server) -> None:
    assert run_example(script, example_server.url, example_server.grpc_target) >= 1


def test_the_readme_request_answers_what_it_shows(example_server: Server) -> None:
    """The README's curl, run as written against the example server (its port changed), prints the line under it."""
    command, shown = block("sh", "curl", README).splitlines()
    address = example_server.url.removeprefix("http://")
    ran = subprocess.run(command.replace("localhost:8000", address), shell=True, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == shown.removeprefix("# ")
