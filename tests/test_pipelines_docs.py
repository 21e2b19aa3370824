"""The "Pipelines" section of ``docs/pipelines.md`` does what it shows: its plugin (the predictor and the
pipelines it ships, with its entry points) recorded as installed, its settings file, its command, and each of
its curl commands answering as shown, against a real ``stevedore-server run``."""

from __future__ import annotations

import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from stevedore_server.base.sources import PIPELINES_GROUP, PREDICTORS_GROUP

from .documentation import block, page
from .test_docs_examples import check_answer, commands, curl
from .venvs import Server, Venv

pytestmark = pytest.mark.server

PAGE = page("pipelines.md")
PLUGIN = block("python", "class HookedSum(Predictor)", PAGE)
ENTRY_POINTS = block("toml", 'mine = "my_pipelines:PIPELINES"', PAGE)
SETTINGS = block("toml", "# pipelines.toml", PAGE)
COMMAND = block("sh", "stevedore-server run --config pipelines.toml", PAGE)
CURLS = block("sh", "/pipelines/iris-sum/predict -d", PAGE)


def plugin_site(root: Path) -> Path:
    """The page's plugin as installed: its module, and its distribution's metadata with the page's entry points."""
    root.mkdir(parents=True)
    (root / "my_pipelines.py").write_text(PLUGIN)
    groups = tomllib.loads(ENTRY_POINTS)["project"]["entry-points"]
    assert set(groups) == {PREDICTORS_GROUP, PIPELINES_GROUP}
    info = root / "my_pipelines-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pipelines\nVersion: 0.1\n")
    text = "".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in groups.items()
    )
    (info / "entry_points.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("pipelines-docs")
    (root / "pipelines.toml").write_text(SETTINGS)
    arguments = shlex.split(COMMAND.strip())
    assert arguments[:2] == ["stevedore-server", "run"]
    arguments = [str(root / argument) if argument == "pipelines.toml" else argument for argument in arguments[2:]]
    running = Server.start(
        Venv(Path(sys.prefix), ()), root / "server.log", *arguments,
        "--plugins", "stevedore-sklearn-logreg,my-pipelines", PYTHONPATH=str(plugin_site(root / "site")),
    )  # fmt: skip
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()


def test_the_pages_pipelines_serve_as_shown(server: Server) -> None:
    shown = commands(CURLS)
    for command in shown:
        check_answer(command, *curl(command.line, server.url))
    assert sum(command.shown.startswith("{") for command in shown) == len(shown) - 1  # all but the 422
