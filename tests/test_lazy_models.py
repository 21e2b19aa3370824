"""Models loaded on their first request within a memory budget, against a real ``stevedore-server run``: fifty
models of one test plugin (``tests/installed/lazy``, each holding 24 MiB once loaded) with a budget that holds
five, first requests that come together, a model that fails to load, ``--workers 2`` and a model run in worker
processes, evicted."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stevedore_server.base.errors import SettingError
from stevedore_server.base.settings import Settings

from .documentation import block, page
from .helpers import record_distribution, wait_until
from .venvs import INSTALLED, REPO, Server, Venv

pytestmark = pytest.mark.server

MEBIBYTES = 24
#: Five models and a half: a sixth never fits.
BUDGET = f"{MEBIBYTES * 11 // 2}MiB"
LAZY = f'model_load = "lazy"\nmodel_memory_budget = "{BUDGET}"\n'


@contextlib.contextmanager
def serving(directory: Path, config: str, *args: str) -> Iterator[tuple[Server, Path]]:
    """The real server serving the lazy test plugin, ready; and the folder where its loads are counted."""
    site, loads = directory / "site", directory / "loads"
    loads.mkdir()
    record_distribution(site, "stevedore-test-lazy", {"lazy": "stevedore_test_lazy:models"})
    (directory / "stevedore.toml").write_text(config)
    path = f"{REPO}:{site}:{INSTALLED / 'lazy'}"
    here = Venv(Path(sys.prefix), ())
    options = ("--config", str(directory / "stevedore.toml"), *args)
    server = Server.start(here, directory / "server.log", *options, PYTHONPATH=path, LAZY_LOADS_DIR=str(loads))
    try:
        server.wait_for("/readyz", deadline=120)
        yield server, loads
    finally:
        server.stop()


def predict(server: Server, name: str, row: list[float]) -> httpx.Response:
    return httpx.post(f"{server.url}/models/{name}/predict", json=[row], timeout=60)


def loads_of(loads: Path, name: str) -> int:
    path = loads / name
    return len(path.read_text().splitlines()) if path.exists() else 0


def index(server: Server) -> dict[str, dict[str, str]]:
    entries = httpx.post(server.url + "/v2/repository/index", json={}, timeout=30).json()
    return {entry["name"]: entry for entry in entries}


def ready_names(server: Server) -> set[str]:
    return {name for name, entry in index(server).items() if entry["state"] == "READY"}


def metric(server: Server, pattern: str) -> list[float]:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return [float(value) for value in re.findall(rf"^{pattern} ([0-9.e+]+)$", text, re.MULTILINE)]


def test_fifty_models_with_a_budget_of_five_answer_right_and_no_more_than_five_are_ever_loaded(tmp_path: Path) -> None:
    config = LAZY + "[models.lazy-07]\npin = true\n"
    with serving(tmp_path, config) as (server, loads):
        listed = index(server)
        assert listed["lazy-00"] == {"name": "lazy-00", "version": listed["lazy-00"]["version"],
                                     "state": "UNAVAILABLE", "reason": "not loaded yet"}  # fmt: skip
        assert ready_names(server) == set()
        for number in [7, *range(50)]:
            response = predict(server, f"lazy-{number:02d}", [1.0, 2.0])
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["value"] == number + 3.0
            ready = ready_names(server)
            assert len(ready) <= 5, ready
            assert "lazy-07" in ready  # pinned: never unloaded
            assert metric(server, "stevedore_models_loaded") == [len(ready)]
        assert loads_of(loads, "lazy-07") == 1
        recent = sorted(ready_names(server) - {"lazy-07"})
        assert len(recent) >= 3  # the budget holds five (less when a load measured more than its array)
        for name in recent:  # the most recently used stay loaded: asked again, none loads again
            assert predict(server, name, [0.0]).status_code == 200
            assert loads_of(loads, name) == 1
        assert sum(metric(server, r'stevedore_model_evictions_total\{model="lazy-\d\d",version="[^"]+"\}')) >= 44
        held = metric(server, r'stevedore_model_memory_bytes\{model="lazy-49",version="[^"]+"\}')
        assert held and MEBIBYTES * 2**20 <= held[0] < 3 * MEBIBYTES * 2**20
        first = predict(server, "lazy-00", [1.0])  # evicted long ago: loaded again, right
        assert first.json()["predictions"][0]["value"] == 1.0
        assert loads_of(loads, "lazy-00") == 2
    log = (tmp_path / "server.log").read_text()
    assert re.search(
        r"model lazy-00 version \S+ unloaded to keep within the memory budget \(it held 2\d\.\d MiB\)", log
    )


def test_first_requests_that_come_together_share_one_load_and_a_failed_load_answers_each_the_same(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, LAZY) as (server, loads), ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: predict(server, "lazy-slow", [1.0]), range(10)))
        assert [answer.status_code for answer in answers] == [200] * 10
        assert {answer.json()["predictions"][0]["value"] for answer in answers} == {101.0}
        assert loads_of(loads, "lazy-slow") == 1

        failures = list(pool.map(lambda _: predict(server, "lazy-broken", [1.0]), range(5)))
        assert {failure.status_code for failure in failures} == {503}
        errors = {failure.json()["error"] for failure in failures}
        assert len(errors) == 1, errors
        assert "failed to load: load() failed: RuntimeError: this model's artifact is corrupt" in errors.pop()
        assert loads_of(loads, "lazy-broken") == 1
        again = predict(server, "lazy-broken", [1.0])  # within the back-off: the same error, no new load
        assert again.status_code == 503 and "Retry-After" in again.headers
        assert loads_of(loads, "lazy-broken") == 1
        assert predict(server, "lazy-01", [1.0]).json()["predictions"][0]["value"] == 2.0  # the others serve
        assert "failed to load" in index(server)["lazy-broken"]["reason"]
        time.sleep(2.5)  # the first back-off passed: tried again
        assert predict(server, "lazy-broken", [1.0]).status_code == 503
        assert loads_of(loads, "lazy-broken") == 2
        failed = metric(server, r'stevedore_model_loads_total\{model="lazy-broken",outcome="failed",version="[^"]+"\}')
        assert failed == [2.0]


def test_each_of_two_workers_keeps_its_own_budget(tmp_path: Path) -> None:
    with serving(tmp_path, LAZY, "--workers", "2") as (server, loads):
        for _ in range(2):
            for number in range(12):
                response = predict(server, f"lazy-{number:02d}", [number])
                assert response.json()["predictions"][0]["value"] == 2.0 * number
        per_worker = metric(server, r'stevedore_models_loaded\{pid="\d+"\}')
        assert per_worker and all(0 < count <= 5 for count in per_worker), per_worker
        pids = {line for number in range(12) for line in (loads / f"lazy-{number:02d}").read_text().split()}
        assert len(pids) == 2  # both workers loaded models, each its own
        # An explicit load reaches every worker before it is answered; an explicit unload stays: no lazy load.
        loaded = httpx.post(server.url + "/v2/repository/models/lazy-40/load", timeout=120)
        assert loaded.status_code == 200, loaded.text
        assert all(index(server)["lazy-40"]["state"] == "READY" for _ in range(8))
        assert loads_of(loads, "lazy-40") == 2
        unloaded = httpx.post(server.url + "/v2/repository/models/lazy-40/unload", timeout=120)
        assert unloaded.status_code == 200, unloaded.text
        refused = [predict(server, "lazy-40", [1.0]) for _ in range(6)]
        assert {answer.status_code for answer in refused} == {503}
        assert loads_of(loads, "lazy-40") == 2


def test_a_model_in_worker_processes_is_evicted_with_its_processes(tmp_path: Path) -> None:
    config = LAZY + "[models.lazy-03]\nprocesses = 2\n"
    with serving(tmp_path, config) as (server, loads):
        pids = set()
        for _ in range(6):
            response = predict(server, "lazy-03", [1.0])
            assert response.json()["predictions"][0]["value"] == 4.0
            pids.add(response.json()["predictions"][0]["pid"])
        assert os.getpid() not in pids and server.process.pid not in pids
        assert loads_of(loads, "lazy-03") == 2  # one load in each of its two processes
        for number in (4, 5):  # its two processes hold more than the budget: the next model evicts it
            assert predict(server, f"lazy-{number:02d}", [1.0]).status_code == 200
        assert "lazy-03" not in ready_names(server)
        wait_until(lambda: not any(alive(pid) for pid in pids), "the evicted model's worker processes to end")
        again = predict(server, "lazy-03", [1.0])  # loaded again, in new processes
        assert again.json()["predictions"][0]["value"] == 4.0
        assert again.json()["predictions"][0]["pid"] not in pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_scaling_out_example_loads_iris_at_startup_pinned_and_the_others_on_their_first_request(
    tmp_path: Path,
) -> None:
    shown = block("toml", "many models, a few busy at a time", page("operations/scaling-out.md"))
    with serving(tmp_path, shown) as (server, _):
        assert ready_names(server) == {"iris"}
        assert index(server)["lazy-01"]["reason"] == "not loaded yet"
        assert predict(server, "lazy-01", [1.0]).json()["predictions"][0]["value"] == 2.0
        assert ready_names(server) == {"iris", "lazy-01"}
    settings = Settings.load({}, config=str(tmp_path / "stevedore.toml"))
    assert settings.memory_budget == 2 * 2**30 and settings.for_model("iris").pin is True


def test_the_budget_takes_bytes_or_a_unit_and_refuses_anything_else() -> None:
    assert Settings.load({"STEVEDORE_MODEL_MEMORY_BUDGET": "1.5GiB"}).memory_budget == 3 * 2**29
    assert Settings.load({}, model_memory_budget="1048576").memory_budget == 2**20
    assert Settings.load({}).memory_budget is None
    for wrong in ("lots", "0", "5XB", "-1MiB"):
        with pytest.raises(SettingError, match="model_memory_budget"):
            Settings.load({"STEVEDORE_MODEL_MEMORY_BUDGET": wrong})
    with pytest.raises(SettingError, match="model_load"):
        Settings.load({"STEVEDORE_MODEL_LOAD": "eager"})
