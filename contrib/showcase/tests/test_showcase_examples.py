"""Every command of the showcase's README (which the documentation's pages include), run as written against a
real server of the installed wheel, its answer compared with the lines under it."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stevedore_server.kit.loopback import LiveServer

README = Path(__file__).resolve().parents[1] / "README.md"
#: Where the documented commands send their requests; the tests' server listens elsewhere.
DOCUMENTED_ADDRESS = "localhost:8000"
#: A section of the README, as the pages include it (``--8<-- "contrib/showcase/README.md:NAME"``).
SECTION = re.compile(
    r"<!-- --8<-- \[start:(?P<name>[-\w]+)\] -->\n(?P<body>.*?)<!-- --8<-- \[end:(?P=name)\] -->", flags=re.S
)
SH_BLOCK = re.compile(r"```sh\n(.*?)```", flags=re.S)


@dataclass
class Example:
    """A documented command (its continuation lines joined by the shell) and the answer shown under it."""

    command: str
    answer: list[str] = field(default_factory=list)


def examples(block: str) -> list[Example]:
    """The commands of an ``sh`` block: a line that is no comment starts one, unless the one before ends in ``\\``;
    the comment lines under it are its answer, ``# `` taken off."""
    found: list[Example] = []
    for line in block.splitlines():
        if line.startswith("#"):
            found[-1].answer.append(line.removeprefix("#").removeprefix(" "))
        elif found and found[-1].command.endswith("\\") and not found[-1].answer:
            found[-1].command += "\n" + line
        else:
            found.append(Example(line))
    return found


def documented() -> list[tuple[str, Example]]:
    """Each command of the README's sections that talk to the server, with its section's name."""
    return [
        (section["name"], example)
        for section in SECTION.finditer(README.read_text())
        for block in SH_BLOCK.findall(section["body"])
        if DOCUMENTED_ADDRESS in block
        for example in examples(block)
    ]


def as_documented(output: str, answer: list[str]) -> bool:
    """The output is the answer shown: the same JSON (the docs wrap long lines), else the same text."""
    try:
        received = json.loads(output)
    except ValueError:
        return output.rstrip("\n") == "\n".join(answer)
    return bool(received == json.loads("".join(line.strip() for line in answer)))


EXAMPLES = documented()


def test_each_example_is_documented_with_its_answer() -> None:
    sections = {name for name, _ in EXAMPLES}
    assert sections == {"next-day", "countdown", "countdown-predict", "routes"}
    assert all(example.answer for _, example in EXAMPLES)


@pytest.mark.parametrize(
    "example", [example for _, example in EXAMPLES], ids=[f"{name}-{index}" for index, (name, _) in enumerate(EXAMPLES)]
)
def test_the_documented_command_answers_as_shown(showcase_server: LiveServer, example: Example) -> None:
    address = showcase_server.url.removeprefix("http://")
    command = example.command.replace(DOCUMENTED_ADDRESS, address)
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert as_documented(result.stdout, example.answer), f"$ {command}\n{result.stdout}"
