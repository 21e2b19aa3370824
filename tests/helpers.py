"""Helpers shared by the tests (the fixtures live in conftest.py, which imports from here, never the reverse)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pluggy
from fastapi.testclient import TestClient

from stevedore_server.core.runtime import ModelRuntime
from stevedore_server.frontends.state import of_lifespan
from stevedore_server.plugins.manager import get_plugin_manager

#: Seconds between two looks of ``wait_until``: a look costs little, and the wait ends soon after the change.
WAIT_INTERVAL = 0.005


class Registers:
    """A test plugin contributing the given predictors through the registration hook."""

    def __init__(self, *predictors: object) -> None:
        self.predictors = predictors

    @pluggy.HookimplMarker("stevedore")
    def stevedore_register_predictors(self, register: Callable[[object], None]) -> None:
        for predictor in self.predictors:
            register(predictor)


def fresh_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with only the default plugins and the given ones: no entry points of the machine."""
    manager, failures = get_plugin_manager(load_entry_points=False)
    if failures:
        raise AssertionError(f"a manager without entry points reported failures: {failures}")
    for plugin in plugins:
        manager.register(plugin)
    return manager


def record_distribution(
    site: Path, name: str, entry_points: dict[str, str], group: str = "stevedore.predictors"
) -> None:
    """Record a distribution on ``site`` (a folder on a server's ``PYTHONPATH``) as an installer does: its metadata
    and its entry points of ``group`` (``name = module:attribute``), which the server finds as any installed ones,
    with no wheel to build."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = "".join(f"{entry} = {target}\n" for entry, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n" + lines)


def wait_until(
    condition: Callable[[], bool],
    awaited: str,
    deadline: float = 60.0,
    interval: float = WAIT_INTERVAL,
    explain: Callable[[], str] | None = None,
) -> None:
    """Return as soon as ``condition()`` holds, looking every ``interval`` seconds; fail naming what was
    ``awaited`` (and what ``explain()`` says then, such as a server's log) if it still does not after ``deadline``
    seconds. The deadline only bounds a broken run: on a slow machine the wait is longer, never wrong."""
    give_up = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(
                f"still waiting, after {deadline:g} s, for {awaited}" + (f":\n{explain()}" if explain else "")
            )
        time.sleep(interval)


def model_runtime(client: TestClient, name: str) -> ModelRuntime:
    """The runtime serving model ``name`` in ``client``'s app: its admission count, threads and batch queue are
    the state a test waits on (a request queued, a model busy) instead of guessing how long it takes."""
    state = of_lifespan(client.app_state)
    if state is None:
        raise AssertionError("the app's lifespan has not started")
    runtime = state.server.registry.get(name).runtime
    if not isinstance(runtime, ModelRuntime):
        raise AssertionError(f"model {name!r} has no runtime in this process: {runtime!r}")
    return runtime
