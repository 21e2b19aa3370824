"""tox runs what ``make test`` runs: the documentation site built ``--strict``, and pytest over the same folders
(the Makefile's ``$(wildcard plugins/*/tests)`` as they are now)."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_test_commands() -> list[str]:
    """The recipe lines of the Makefile's ``test`` target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("test:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def tox_commands() -> list[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return [line.strip() for line in parser["testenv"]["commands"].splitlines() if line.strip()]


def pytest_paths(command: str) -> set[str]:
    """The folders a pytest command line names, ``$(wildcard ...)`` expanded, tox's ``{posargs:...}`` opened."""
    command = re.sub(r"\{posargs:(.*)\}", r"\1", command)
    command = re.sub(r"\$\(wildcard ([^)]*)\)", lambda match: " ".join(expanded(match[1])), command)
    return {word.rstrip("/") for word in shlex.split(command) if (ROOT / word).is_dir()}


def expanded(pattern: str) -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in ROOT.glob(pattern))


def test_tox_builds_the_site_strictly_as_make_test_does() -> None:
    assert any(line.startswith("$(BIN)/mkdocs build --strict") for line in make_test_commands())
    assert any(line.startswith("mkdocs build --strict") for line in tox_commands()), tox_commands()


def test_tox_runs_the_tests_of_every_folder_make_test_runs() -> None:
    [make_pytest] = [line for line in make_test_commands() if " pytest " in line]
    [tox_pytest] = [line for line in tox_commands() if line.startswith("pytest ")]
    expected = pytest_paths(make_pytest)
    assert {"tests", "contrib/showcase/tests"} <= expected
    assert pytest_paths(tox_pytest) == expected
    assert '-m "not mlserver"' in make_pytest and '-m "not mlserver"' in tox_pytest
