"""A real ``stevedore-server run`` with pipelines: the example plugin (``iris``, ``iris-proba``) and the pipeline
test plugin (``tests/installed/pipeline``: ``hooked-sum`` and other small models, and the pipeline
``shipped-sum`` of its ``stevedore.pipelines`` entry point), recorded as installed on a folder of the
``PYTHONPATH`` (what installing its wheel leaves; the wheel itself: ``test_pipelines_wheel.py``)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from .venvs import INSTALLED, REPO, Server, Venv

PLUGIN = INSTALLED / "pipeline"
PLUGINS = "stevedore-sklearn-logreg,stevedore-test-pipeline"
#: The issue's two forms, as it writes them (they must work as written).
ISSUE = """
[pipelines.iris-sum]            # one node: its table is the node
type = "sequence"
steps = [{ model = "iris-proba" }, { model = "hooked-sum", data = "$response" }]

[pipelines.router]              # several nodes: `root` names the entry
root = "pick"
[pipelines.router.nodes.pick]
type = "switch"
steps = [{ node = "chain", condition = { pointer = "/0/0", op = ">", value = 5 } }, { model = "iris" }]
[pipelines.router.nodes.chain]
type = "sequence"
steps = [{ model = "iris-proba", timeout = 2 }, { model = "hooked-sum", data = "$response", dependency = "soft" }]
"""


def record_plugin(site: Path) -> None:
    """The pipeline test plugin's metadata and entry points (both groups) on ``site``."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = site / "stevedore_test_pipeline-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: 0.1.0\n")
    groups = project["entry-points"]
    text = "".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
        for group, entries in groups.items()
    )
    (info / "entry_points.txt").write_text(text)


def start(root: Path, settings: str, *args: str, **env: str) -> Server:
    """The server of this test environment serving ``settings`` (TOML), not waited for."""
    site = root / "site"
    if not site.exists():
        record_plugin(site)
    config = root / "settings.toml"
    config.write_text(settings)
    python_path = ":".join(str(path) for path in (REPO, site, PLUGIN))
    here = Venv(Path(sys.prefix), ())
    return Server.start(
        here, root / "server.log", "--plugins", PLUGINS, "--config", str(config), *args, PYTHONPATH=python_path, **env
    )


def serve(root: Path, settings: str, *args: str, **env: str) -> Server:
    """``start``, then ready (``/readyz``)."""
    server = start(root, settings, *args, **env)
    try:
        server.wait_for("/readyz")
    except AssertionError:
        server.stop()
        raise
    return server
