"""Trained versions against a real ``stevedore-server run``: the newest serves by default whatever its job id
(``--promote-trained``, on by default), the oldest past ``--max-trained-versions`` are retired with their
artifacts, an admin removes one over the API, and an artifact outside its job's own directory is never loaded.

The server is the tests' environment's, serving ``offset-trainer`` (``trained_predictors``) through a recorded
distribution; its artifacts are pickles, loaded with ``pickle``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.version import Version

from stevedore_server.base.sources import PluginSource
from stevedore_server.core.served_models import TRAINED_BY_JOB, Registry, Snapshot, TrainedOrder
from stevedore_server.core.serving import ServingModel, describe
from stevedore_server.jobs.records import TrainedVersion, default_url
from stevedore_server.jobs.store import JobStore
from stevedore_server.jobs.versions import beyond
from stevedore_server.plugins.loading import not_loaded

from .helpers import record_distribution, wait_until
from .predictors import RowSum
from .trained_predictors import Marked
from .venvs import REPO, Server, Venv, ready_server

MODEL = "offset-trainer"
DISTRIBUTION = "stevedore-test-offset"
DEADLINE = 90.0
ROW = [[1, 2]]
#: Job ids whose versions PEP 440 orders the wrong way round: an all-digit local part outranks a letter one.
OLDER_JOB, NEWER_JOB = "99999999-0000-4000-8000-000000000000", "aaaaaaaa-0000-4000-8000-000000000000"
OLDER, NEWER = "1+job.99999999", "1+job.aaaaaaaa"
ADMIN_KEY, TRAIN_KEY = "admin-key-of-the-test", "train-key-of-the-test"

#: Starts a ready server of ``offset-trainer`` on the test's state directory: (log name, arguments) -> server.
Serve = Callable[..., Server]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def serve(tmp_path: Path, state_dir: Path) -> Serve:
    site = tmp_path / "site"
    record_distribution(site, DISTRIBUTION, {MODEL: "tests.trained_predictors:OffsetTrainer"})
    here = Venv(Path(sys.prefix), ())
    environment = {"PYTHONPATH": f"{REPO}:{site}", "STEVEDORE_STATE_DIR": str(state_dir)}

    def start(log: str, *args: str) -> Server:
        arguments = ("--plugins", DISTRIBUTION, *args)
        return ready_server(here, tmp_path / log, *arguments, deadline=DEADLINE, **environment)

    return start


def store_of(state_dir: Path) -> JobStore:
    return JobStore(default_url(str(state_dir)))


def recorded(state_dir: Path) -> list[TrainedVersion]:
    store = store_of(state_dir)
    try:
        return store.trained()
    finally:
        store.close()


def queue_training(state_dir: Path, job_id: str, offset: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queue a training straight into the jobs database, as another server sharing it would, with the job id the
    test chooses (the store's own ``create``, given that id)."""
    store = store_of(state_dir)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(uuid, "uuid4", lambda: uuid.UUID(job_id))
            store.create(MODEL, "1", "train", {"offset": offset})
    finally:
        store.close()


def train(server: Server, offset: float, key: str | None = None) -> str:
    """Train over the API until the job succeeds; the version it made."""
    headers = bearer(key)
    response = httpx.post(f"{server.url}/models/{MODEL}/train", json={"offset": offset}, headers=headers)
    assert response.status_code == 202, response.text
    return succeeded(server, response.json()["id"], key)


def succeeded(server: Server, job_id: str, key: str | None = None) -> str:
    """Wait for the job to end; the version it made (it must have succeeded and made one)."""
    stop_at = time.monotonic() + DEADLINE
    while time.monotonic() < stop_at:
        job: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}", headers=bearer(key)).json()
        if job.get("state") not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["state"] == "succeeded" and job["result"]["served_version"], f"{job}\n{server.log()}"
    version: str = job["result"]["served_version"]
    return version


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def unversioned_predictions(server: Server, times: int = 20) -> set[tuple[str, float]]:
    """The (version, prediction) of unversioned predictions, each on a fresh connection: the requests spread over
    the workers."""
    answers = set()
    for _ in range(times):
        answer = httpx.post(f"{server.url}/models/{MODEL}/predict", json=ROW)
        assert answer.status_code == 200, answer.text
        answers.add((answer.json()["model_version"], answer.json()["predictions"][0]))
    return answers


def catalogue_entry(server: Server, key: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = httpx.get(f"{server.url}/models/{MODEL}", headers=bearer(key)).json()
    return entry


@pytest.mark.server
def test_the_newest_trained_version_serves_by_default_on_every_worker_whatever_its_job_id(
    serve: Serve, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Version(OLDER) > Version(NEWER)  # by PEP 440, the older version would be the highest
    server = serve("workers.log", "--workers", "2")
    try:
        queue_training(state_dir, OLDER_JOB, 10, monkeypatch)
        assert succeeded(server, OLDER_JOB) == OLDER
        queue_training(state_dir, NEWER_JOB, 20, monkeypatch)
        assert succeeded(server, NEWER_JOB) == NEWER
        # At once, on every worker: the job succeeded once each had looked at its row.
        assert unversioned_predictions(server) == {(NEWER, 23)}, server.log()
        entry = catalogue_entry(server)
        assert (entry["version"], entry["versions"]) == (NEWER, [NEWER, OLDER, "1"]), entry
        v2 = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
        assert v2["versions"][0] == NEWER, v2
    finally:
        assert server.stop() == 0, server.log()
    again = serve("again.log")  # the rows, read at startup, give the same order
    try:
        assert unversioned_predictions(again, 3) == {(NEWER, 23)}, again.log()
    finally:
        assert again.stop() == 0, again.log()


@pytest.mark.server
def test_without_promote_trained_the_installed_version_stays_the_default(serve: Serve) -> None:
    server = serve("server.log", "--no-promote-trained")
    try:
        trained = train(server, 5)
        assert unversioned_predictions(server, 3) == {("1", 3)}
        entry = catalogue_entry(server)
        assert (entry["version"], entry["versions"]) == ("1", ["1", trained]), entry
        answer = httpx.post(f"{server.url}/models/{MODEL}/versions/{trained}/predict", json=ROW)
        assert answer.status_code == 200 and answer.json()["predictions"] == [8], answer.text
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.server
def test_past_max_trained_versions_the_oldest_are_retired_with_their_artifacts(serve: Serve, state_dir: Path) -> None:
    server = serve("server.log", "--max-trained-versions", "2")
    try:
        versions = [train(server, offset) for offset in (1, 2, 3)]
        first, second, third = versions
        entry = catalogue_entry(server)
        assert (entry["version"], entry["versions"]) == (third, [third, second, "1"]), entry
        gone = httpx.post(f"{server.url}/models/{MODEL}/versions/{first}/predict", json=ROW)
        assert gone.status_code == 404, gone.text
        assert f"versions {first} retired (max_trained_versions 2)" in server.log()
    finally:
        assert server.stop() == 0, server.log()
    rows = recorded(state_dir)
    assert [row.version for row in rows] == [second, third]
    assert sorted(path.name for path in (state_dir / "artifacts").iterdir()) == sorted(row.job_id for row in rows)


def test_the_oldest_past_the_limit_are_retired_but_never_the_default() -> None:
    made = datetime.now(UTC)
    rows = [TrainedVersion(MODEL, f"1+job.{n}", "1", str(n), f"/kept/{n}", made, id=n) for n in range(1, 5)]
    assert [row.id for row in beyond(rows, 2, "1+job.4")] == [1, 2]
    assert [row.id for row in beyond(rows, 2, "1+job.1")] == [2, 3]  # the default stays, though the oldest
    assert beyond(rows, 0, None) == [] and beyond(rows, 4, None) == []


def rowsum(version: str, job: str | None = None) -> ServingModel:
    """A version of ``rowsum`` as the registry holds it: installed, or trained by ``job``."""
    return describe(not_loaded(RowSum(version=version), PluginSource("rowsum")), {TRAINED_BY_JOB: job} if job else {})


def test_versions_are_listed_default_first_and_a_trained_one_not_recorded_yet_is_never_the_default() -> None:
    models = [rowsum("1"), rowsum("2"), rowsum(OLDER, "a"), rowsum(NEWER, "b"), rowsum("1+job.0", "c")]
    made = {"rowsum": (OLDER, NEWER)}  # "c" serves where it was trained, its row not written yet

    def listed(order: TrainedOrder) -> list[str]:
        return [model.version for model in Snapshot.of(models, order).by_name["rowsum"]]

    assert listed(TrainedOrder(made)) == [NEWER, OLDER, "1+job.0", "2", "1"]
    assert listed(TrainedOrder(made, promote=False)) == ["2", NEWER, OLDER, "1+job.0", "1"]
    assert listed(TrainedOrder())[0] == "2"
    registry = Registry(Snapshot.of(models))
    assert registry.get("rowsum").version == "2"  # nothing recorded yet: the highest installed one
    registry.order_trained(TrainedOrder(made))
    assert registry.get("rowsum").version == NEWER
    assert registry.remove_trained("rowsum", "2") is None  # an installed version stays
    assert registry.remove_trained("rowsum", NEWER) is not None and registry.get("rowsum").version == OLDER


def key_file(path: Path) -> Path:
    digest = {key: hashlib.sha256(key.encode()).hexdigest() for key in (ADMIN_KEY, TRAIN_KEY)}
    path.write_text(f"{digest[ADMIN_KEY]} admin\n{digest[TRAIN_KEY]} train\n")
    return path


@pytest.mark.server
def test_an_admin_key_removes_a_trained_version_with_its_artifact_from_every_worker(
    serve: Serve, state_dir: Path, tmp_path: Path
) -> None:
    keys = key_file(tmp_path / "keys")
    server = serve("server.log", "--api-key-file", str(keys), "--workers", "2")
    try:
        trained = train(server, 7, TRAIN_KEY)
        (row,) = recorded(state_dir)
        path = f"{server.url}/models/{MODEL}/versions/{trained}"
        assert httpx.delete(path).status_code == 401
        refused = httpx.delete(path, headers=bearer(TRAIN_KEY))
        assert refused.status_code == 403 and "admin" in refused.json()["error"], refused.text
        assert (state_dir / "artifacts" / row.job_id).is_dir()
        removed = httpx.delete(path, headers=bearer(ADMIN_KEY))
        assert removed.status_code == 204, removed.text
        assert recorded(state_dir) == [] and not (state_dir / "artifacts" / row.job_id).exists()

        def dropped_by_every_worker() -> bool:  # the other worker drops it at its next look at the table
            answers = [httpx.get(path, headers=bearer(ADMIN_KEY)).status_code for _ in range(20)]
            return answers == [404] * 20

        wait_until(dropped_by_every_worker, "the removed version dropped by every worker", 30, 0.2, server.log)
        entry = catalogue_entry(server, ADMIN_KEY)
        assert (entry["version"], entry["versions"]) == ("1", ["1"]), entry
        again = httpx.delete(path, headers=bearer(ADMIN_KEY))
        assert again.status_code == 404 and trained in again.json()["error"], again.text
        installed = httpx.delete(f"{server.url}/models/{MODEL}/versions/1", headers=bearer(ADMIN_KEY))
        assert installed.status_code == 409 and "installed" in installed.json()["error"], installed.text
        unknown = httpx.delete(f"{server.url}/models/nothing/versions/1", headers=bearer(ADMIN_KEY))
        assert unknown.status_code == 404, unknown.text
    finally:
        assert server.stop() == 0, server.log()


def write_pickle(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value))
    return path


@pytest.mark.server
def test_an_artifact_outside_its_jobs_own_directory_is_never_loaded(
    serve: Serve, state_dir: Path, tmp_path: Path
) -> None:
    artifacts, outside, marks = state_dir / "artifacts", tmp_path / "outside", tmp_path / "marks"
    marks.mkdir()
    # Each job's row names a pickle that, unpickled, leaves a mark named after the job.
    plain = write_pickle(outside / "plain.pickle", Marked(marks / "plain"))
    linked = artifacts / "linked" / "model.pickle"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(write_pickle(outside / "linked.pickle", Marked(marks / "linked")))
    write_pickle(outside / "directory" / "model.pickle", Marked(marks / "directory"))
    (artifacts / "directory").symlink_to(outside / "directory")
    climbing = write_pickle(state_dir / "climbing.pickle", Marked(marks / "climbing"))
    kept = write_pickle(artifacts / "kept" / "model.pickle", Marked(marks / "kept", offset=5))
    rows = [  # (the version's label, its job id, its artifact)
        ("plain", "plain", plain),  # a file anywhere
        ("linked", "linked", linked),  # a link in the job's directory, to a file outside it
        ("directory", "directory", artifacts / "directory" / "model.pickle"),  # the job's directory a link
        ("climbing", "..", artifacts / ".." / "climbing.pickle"),  # a job id that climbs out of the artifacts
        ("kept", "kept", kept),  # where the server keeps a job's artifact: loaded
    ]
    store = store_of(state_dir)
    try:
        for label, job_id, artifact in rows:
            store.record_trained(TrainedVersion(MODEL, f"1+job.{label}", "1", job_id, str(artifact), datetime.now(UTC)))
    finally:
        store.close()
    server = serve("server.log")
    try:
        entry = catalogue_entry(server)
        assert entry["versions"] == ["1+job.kept", "1"], entry
        answer = httpx.post(f"{server.url}/models/{MODEL}/predict", json=ROW).json()
        assert (answer["model_version"], answer["predictions"]) == ("1+job.kept", [8]), answer
        assert sorted(os.listdir(marks)) == ["kept"]  # the others were never unpickled
        log = server.log()
        for label in ("plain", "linked", "directory"):
            assert f"(trained by job {label}) is not served: UntrustedArtifact: its " in log, log
        assert "(trained by job ..) is not served: UntrustedArtifact: its job id '..' names no directory" in log, log
        # Removing the climbing job's version deletes its row, and nothing outside the artifacts.
        removed = httpx.delete(f"{server.url}/models/{MODEL}/versions/1+job.climbing")
        assert removed.status_code == 204, removed.text
        assert [row.version for row in recorded(state_dir)] == [f"1+job.{label}" for label, _, _ in rows[:3]] + [
            "1+job.kept"
        ]
        assert climbing.is_file() and (state_dir / "jobs.db").is_file()
    finally:
        assert server.stop() == 0, server.log()
