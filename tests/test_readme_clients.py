"""The README's client examples (``tritonclient.http`` and ``tritonclient.grpc``) run against the real example
server, and every line commented with its result gives that result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .venvs import Server

README = (Path(__file__).parent.parent / "README.md").read_text()
EXAMPLES = [block for block in re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL) if "tritonclient" in block]


def run_example(block: str, url: str, grpc_target: str = "") -> int:
    """Run ``block`` line by line against the server at ``url`` (and ``grpc_target``); a line
    ``EXPRESSION  # RESULT`` must give ``RESULT`` (its ``repr``). Returns how many results were checked."""
    addresses = {"127.0.0.1:8000": url.removeprefix("http://"), "127.0.0.1:8081": grpc_target}
    namespace: dict[str, object] = {}
    checked = 0
    for line in block.splitlines():
        code, _, expected = line.partition("  # ")
        for documented, real in addresses.items():
            code = code.replace(documented, real)
        if expected:
            assert repr(eval(code, namespace)) == expected.strip(), line
            checked += 1
        else:
            exec(code, namespace)
    return checked


def test_the_readme_has_an_http_and_a_grpc_example() -> None:
    assert [("tritonclient.http" in b, "tritonclient.grpc" in b) for b in EXAMPLES] == [(True, False), (False, True)]


@pytest.mark.parametrize("block", EXAMPLES, ids=["http", "grpc"])
def test_a_readme_client_example_gives_the_results_it_shows(block: str, example_server: Server) -> None:
    assert run_example(block, example_server.url, example_server.grpc_target) >= 1
