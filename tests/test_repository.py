"""The model repository extension: index, load and unload while serving (one worker, in process)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient

from stevedore_server.base.settings import Settings
from stevedore_server.frontends.app import ServingProcess

from .helpers import Registers
from .predictors import FailsLoad, NoScore, RowSum

INDEX = "/v2/repository/index"


def load(client: TestClient, name: str) -> Any:
    return client.post(f"/v2/repository/models/{name}/load")


def unload(client: TestClient, name: str) -> Any:
    return client.post(f"/v2/repository/models/{name}/unload")


def states(client: TestClient, **options: Any) -> dict[str, str]:
    answer = client.post(INDEX, json=options) if options else client.post(INDEX)
    assert answer.status_code == 200, answer.text
    return {f"{e['name']} {e['version']}": e["state"] for e in answer.json()}


def test_the_server_metadata_advertises_the_extension(client: TestClient) -> None:
    assert "model_repository" in client.get("/v2").json()["extensions"]


def test_the_index_lists_loaded_failed_and_not_loaded_models(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore(), FailsLoad()), settings=Settings(load_models=("rowsum",)))
    index = {e["name"]: e for e in client.post(INDEX).json()}
    assert index["rowsum"] == {"name": "rowsum", "version": "1", "state": "READY", "reason": ""}
    assert index["noscore"]["state"] == "UNAVAILABLE" and "not loaded" in index["noscore"]["reason"]
    assert index["failsload"]["state"] == "UNAVAILABLE" and "not loaded" in index["failsload"]["reason"]
    assert states(client, ready=True) == {"rowsum 1": "READY"}
    assert client.post(INDEX, json={"ready": "yes"}).status_code == 400
    # Models not loaded are no failure: the server is ready with what it was asked to load.
    assert client.get("/readyz").json() == {"ready": True, "reasons": []}


def test_load_then_unload_while_serving(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum(), NoScore()), settings=Settings(load_models=("none",)))
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 503
    assert client.get("/v2/models/rowsum/ready").status_code == 400
    answer = load(client, "rowsum")
    assert answer.status_code == 200, answer.text
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]
    assert client.get("/v2/models/rowsum/ready").status_code == 200
    assert states(client) == {"rowsum 1": "READY", "noscore 1": "UNAVAILABLE"}
    assert unload(client, "rowsum").status_code == 200
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 503
    assert client.get("/models/rowsum").json()["state"] == "unloaded"
    assert states(client)["rowsum 1"] == "UNAVAILABLE"
    assert load(client, "rowsum").status_code == 200  # and back
    assert client.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 200


def test_unknown_models_are_404(client: TestClient) -> None:
    assert load(client, "nope").status_code == 404
    assert unload(client, "nope").status_code == 404


class Flaky(RowSum):
    """Loads the first time; fails to load after ``broken`` is set (a bad release)."""

    name = "flaky"
    broken: ClassVar[bool] = False

    def load(self) -> None:
        if type(self).broken:
            raise FileNotFoundError("weights.bin is missing")
        super().load()


def test_a_failing_load_answers_400_and_leaves_the_served_version_untouched(
    make_client: Callable[..., TestClient],
) -> None:
    Flaky.broken = False
    client = make_client(Registers(Flaky()))
    Flaky.broken = True
    try:
        answer = load(client, "flaky")
    finally:
        Flaky.broken = False
    assert answer.status_code == 400
    assert "weights.bin is missing" in answer.json()["error"] and "keeps serving" in answer.json()["error"]
    assert client.post("/models/flaky/predict", json=[[1, 2]]).json()["predictions"] == [3]
    assert client.get("/readyz").status_code == 200


def test_the_repository_needs_an_api_key_when_keys_are_on(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(api_keys=("secret",)))
    for path in (INDEX, "/v2/repository/models/rowsum/load", "/v2/repository/models/rowsum/unload"):
        assert client.post(path).status_code == 401
    assert client.post(INDEX, headers={"Authorization": "Bearer secret"}).status_code == 200


def test_workers_converge_before_a_load_or_unload_is_answered(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """Two apps sharing one desired state, as two workers of one server do."""
    settings, process = Settings(workers=2, load_models=("none",)), ServingProcess(workers_dir=tmp_path)
    first, second = (make_client(Registers(RowSum(), NoScore()), settings=settings, process=process) for _ in range(2))
    assert load(first, "rowsum").status_code == 200
    # Answered only once the other worker has loaded it too: right away it serves there.
    assert second.post("/models/rowsum/predict", json=[[1, 2]]).json()["predictions"] == [3]
    assert unload(second, "rowsum").status_code == 200
    assert first.post("/models/rowsum/predict", json=[[1, 2]]).status_code == 503
    assert load(second, "nope").status_code == 404  # a failed change records nothing
    assert load(first, "noscore").status_code == 200
    assert states(second) == states(first) == {"rowsum 1": "UNAVAILABLE", "noscore 1": "READY"}
    # A worker that starts later (a restart) follows what was loaded before it serves.
    third = make_client(Registers(RowSum(), NoScore()), settings=settings, process=process)
    assert states(third)["noscore 1"] == "READY"


def test_unload_and_load_under_load_answer_only_200_or_503(make_client: Callable[..., TestClient]) -> None:
    client = make_client(Registers(RowSum()))
    seen: Counter[str] = Counter()
    stop = threading.Event()

    def clients() -> None:
        while not stop.is_set():
            response = client.post("/models/rowsum/predict", json=[[1, 2]])
            right = response.status_code != 200 or response.json()["predictions"] == [3]
            seen[str(response.status_code) if right else f"wrong: {response.text}"] += 1

    threads = [threading.Thread(target=clients) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            assert unload(client, "rowsum").status_code == 200
            assert load(client, "rowsum").status_code == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert seen["200"] > 0 and set(seen) <= {"200", "503"}, seen


@pytest.mark.parametrize("value", [("all", "rowsum"), ("none", "all")])
def test_load_models_takes_all_or_none_alone(value: tuple[str, ...]) -> None:
    with pytest.raises(Exception, match="load_models"):
        Settings(load_models=value)
