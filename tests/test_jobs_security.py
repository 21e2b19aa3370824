"""The jobs, secure by default, against a real ``stevedore-server run`` serving the trainer test plugin: a job
records the key that started it and is seen, followed and cancelled only by that key (and an admin's); the job
queue and the log followers are bounded (429 with Retry-After); a job's working directory goes once it has ended
(and with its job, or when no job needs it); a job's process has none of the server's settings and secrets in its
environment; integer query parameters take ASCII digits only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from stevedore_server.jobs.records import JobState, default_url, now
from stevedore_server.jobs.store import JobStore, jobs

from .helpers import record_distribution, wait_until
from .venvs import INSTALLED, REPO, Server, Venv

pytestmark = pytest.mark.server

DEADLINE = 90.0
#: The keys of the keyed server, by scope; ``other`` is a second train key.
KEYS = {
    "infer": "infer-key-5b1e0c",
    "train": "train-key-9d27aa",
    "other": "other-train-key-41c3",
    "admin": "admin-key-e08f12",
}
SCOPES = {"infer": "infer", "train": "train", "other": "train", "admin": "admin"}
#: A key given as ``STEVEDORE_API_KEYS`` (every right): a secret a job's process must not see.
ENV_KEY = "environment-key-c5a9f3d7"


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


@contextlib.contextmanager
def trainer_server(root: Path, *args: str, **env: str) -> Iterator[Server]:
    """The real ``stevedore-server run`` of the environment running the tests, serving the trainer test plugin
    (recorded as installed on a folder of the ``PYTHONPATH``), its state in ``root/state``; ready."""
    site = root / "site"
    project = tomllib.loads((INSTALLED / "trainer" / "pyproject.toml").read_text())["project"]
    record_distribution(site, project["name"], project["entry-points"]["stevedore.predictors"])
    python_path = ":".join(str(path) for path in (REPO, site, INSTALLED / "trainer"))
    settings = {"STEVEDORE_STATE_DIR": str(root / "state"), "STEVEDORE_JOB_GRACE_PERIOD": "1", **env}
    here = Venv(Path(sys.prefix), ())
    server = Server.start(
        here, root / "server.log", "--plugins", "stevedore-test-trainer", *args, PYTHONPATH=python_path, **settings
    )
    try:
        server.wait_for("/readyz", deadline=DEADLINE)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keyed-jobs")


@pytest.fixture(scope="module")
def keyed(keyed_root: Path) -> Iterator[Server]:
    """Keys of every scope (a file of digests, and one key in the environment), the database by URL."""
    key_file = keyed_root / "keys.txt"
    key_file.write_text("".join(f"{hashlib.sha256(KEYS[who].encode()).hexdigest()} {SCOPES[who]}\n" for who in KEYS))
    env = {
        "STEVEDORE_API_KEY_FILE": str(key_file),
        "STEVEDORE_API_KEYS": ENV_KEY,
        "STEVEDORE_DATABASE_URL": database_url(keyed_root),
    }
    with trainer_server(keyed_root, "--max-jobs", "4", **env) as server:
        yield server


def database_url(root: Path) -> str:
    return f"sqlite:///{root / 'database' / 'jobs.db'}"


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Keys off; one job at a time, two queued at most, one log follower at most."""
    root = tmp_path_factory.mktemp("bounded-jobs")
    args = ("--max-jobs", "1", "--max-queued-jobs", "2", "--max-log-followers", "1")
    with trainer_server(root, *args) as server:
        yield server


def start(server: Server, body: dict[str, Any], who: str | None = None, model: str = "misbehaving-trainer") -> Any:
    response = httpx.post(f"{server.url}/models/{model}/train", json=body, headers=auth(who) if who else {})
    assert response.status_code == 202, response.text
    return response.json()


def job_of(server: Server, job_id: str, who: str | None = None) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/jobs/{job_id}", headers=auth(who) if who else {})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def hanging(server: Server, who: str | None = None) -> dict[str, Any]:
    """A training that hangs until cancelled, once its process runs (its pid known)."""
    job_id = start(server, {"mode": "hang"}, who)["id"]
    wait_until(lambda: job_of(server, job_id, who)["message"] == "hanging", f"job {job_id} hanging", DEADLINE,
               0.05, server.log)  # fmt: skip
    return job_of(server, job_id, who)


def finished(server: Server, job_id: str, who: str | None = None) -> dict[str, Any]:
    wait_until(lambda: job_of(server, job_id, who)["state"] not in ("queued", "running"), f"job {job_id} ended",
               DEADLINE, 0.05, server.log)  # fmt: skip
    return job_of(server, job_id, who)


def cancel_every_job(server: Server, who: str | None = None) -> None:
    """Cancel what a test left queued or running (through ``who``, an admin where keys are on)."""
    headers = auth(who) if who else {}
    for job in httpx.get(server.url + "/jobs", headers=headers).json()["jobs"]:
        if job["state"] in ("queued", "running"):
            httpx.delete(f"{server.url}/jobs/{job['id']}", headers=headers)
    for job in httpx.get(server.url + "/jobs", headers=headers).json()["jobs"]:
        finished(server, job["id"], who)


def listed(server: Server, who: str, path: str = "/jobs") -> set[str]:
    response = httpx.get(server.url + path, headers=auth(who))
    assert response.status_code == 200, response.text
    body = response.json()
    return {job.get("id") or job.get("uuid") for job in (body["jobs"] if isinstance(body, dict) else body)}


# -- who started a job, and who sees it -------------------------------------------------------------------------


def test_a_job_records_the_id_of_the_key_that_started_it_never_the_key(keyed: Server) -> None:
    job = hanging(keyed, "train")
    try:
        assert job["started_by"] == key_id(KEYS["train"])
        assert KEYS["train"] not in httpx.get(f"{keyed.url}/jobs/{job['id']}", headers=auth("train")).text
    finally:
        httpx.delete(f"{keyed.url}/jobs/{job['id']}", headers=auth("train"))
        finished(keyed, job["id"], "train")


def test_with_keys_off_a_job_is_started_by_no_key(bounded: Server) -> None:
    job = start(bounded, {"mode": "raise"})
    assert job["started_by"] is None
    finished(bounded, job["id"])


def test_another_keys_job_is_not_there_for_a_train_or_infer_key_and_an_admin_sees_and_cancels_it(
    keyed: Server,
) -> None:
    job = hanging(keyed, "train")
    job_id, url = job["id"], keyed.url
    deepaas = f"{url}/v2/models/misbehaving-trainer/train/"
    try:
        assert job_id in listed(keyed, "train") and job_id in listed(keyed, "train", "/jobs?state=running")
        assert job_id in listed(keyed, "train", "/v2/models/misbehaving-trainer/train/")
        for who in ("other", "infer"):
            assert job_id not in listed(keyed, who), who
            assert job_id not in listed(keyed, who, "/v2/models/misbehaving-trainer/train/"), who
            for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/logs", f"/jobs/{job_id}/logs?follow=true"):
                response = httpx.get(url + path, headers=auth(who))
                assert response.status_code == 404, (who, path, response.text)
                assert response.json() == {"error": f"no job {job_id!r}"}
            assert httpx.get(f"{deepaas}{job_id}/", headers=auth(who)).status_code == 404, who
            fragment = httpx.get(f"{url}/console/fragments/jobs", headers=auth(who))
            assert fragment.status_code == 200 and job_id not in fragment.text, who
            assert httpx.get(f"{url}/console/fragments/jobs/{job_id}/logs", headers=auth(who)).status_code == 404
        for cancel in (f"{url}/jobs/{job_id}", f"{deepaas}{job_id}/"):
            response = httpx.delete(cancel, headers=auth("other"))
            assert response.status_code == 404, response.text
            assert httpx.delete(cancel, headers=auth("infer")).status_code == 403  # cancelling needs train
        assert job_of(keyed, job_id, "train")["state"] == "running"
        # The starter and an admin see it whole; the admin cancels it.
        assert httpx.get(f"{url}/jobs/{job_id}/logs", headers=auth("train")).json()["lines"]
        assert job_id in listed(keyed, "admin")
        fragment = httpx.get(f"{url}/console/fragments/jobs", headers=auth("admin"))
        assert job_id in fragment.text and key_id(KEYS["train"]) in fragment.text
        assert httpx.get(f"{url}/console/fragments/jobs/{job_id}/logs", headers=auth("admin")).status_code == 200
        assert job_of(keyed, job_id, "admin")["started_by"] == key_id(KEYS["train"])
        assert httpx.delete(f"{url}/jobs/{job_id}", headers=auth("admin")).status_code in (200, 202)
        assert finished(keyed, job_id, "train")["state"] == "cancelled"
    finally:
        cancel_every_job(keyed, "admin")


def test_an_infer_key_starts_no_job(keyed: Server) -> None:
    url = keyed.url
    row = [[5.1, 3.5, 1.4, 0.2]]
    for path, body in [
        ("/models/iris-trainer/train", {"C": 1.0}),
        ("/models/iris-trainer/jobs/predict", row),
        ("/v2/models/iris-trainer/train/", {"C": 1.0}),
    ]:
        response = httpx.post(url + path, json=body, headers=auth("infer"))
        assert response.status_code == 403, (path, response.text)
    assert listed(keyed, "infer") == set()


def test_a_train_key_starts_long_predictions_seen_by_it_alone(keyed: Server) -> None:
    row = [[5.1, 3.5, 1.4, 0.2]]
    response = httpx.post(f"{keyed.url}/models/iris-trainer/jobs/predict", json=row, headers=auth("other"))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert finished(keyed, job_id, "other")["result"] == [0]
    assert job_id in listed(keyed, "other") and job_id not in listed(keyed, "train")


# -- bounds -----------------------------------------------------------------------------------------------------


def test_a_job_beyond_max_queued_jobs_is_refused_with_429_and_retry_after(bounded: Server) -> None:
    try:
        hanging(bounded)  # running: the next ones wait, queued
        queued = [start(bounded, {"mode": "hang"}) for _ in range(2)]
        assert [job["state"] for job in queued] == ["queued", "queued"]
        for path in ("/models/misbehaving-trainer/train", "/v2/models/misbehaving-trainer/train/"):
            refused = httpx.post(bounded.url + path, json={"mode": "hang"})
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert "max_queued_jobs" in refused.json()["error"]
        predict = httpx.post(bounded.url + "/models/iris-trainer/jobs/predict", json=[[5.1, 3.5, 1.4, 0.2]])
        assert predict.status_code == 429, predict.text
        assert len([job for job in httpx.get(bounded.url + "/jobs").json()["jobs"] if job["state"] == "queued"]) == 2
        httpx.delete(f"{bounded.url}/jobs/{queued[0]['id']}")  # a place in the queue again
        start(bounded, {"mode": "hang"})
    finally:
        cancel_every_job(bounded)


def test_a_log_follower_beyond_max_log_followers_is_refused_until_one_leaves(bounded: Server) -> None:
    try:
        job = hanging(bounded)
        follow = f"{bounded.url}/jobs/{job['id']}/logs?follow=true"
        with httpx.Client(timeout=30) as first, first.stream("GET", follow) as stream:
            assert stream.status_code == 200
            refused = httpx.get(follow)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert "max_log_followers" in refused.json()["error"]
            assert httpx.get(f"{bounded.url}/jobs/{job['id']}/logs").status_code == 200  # reading is not following
        # The first follower gone (its connection closed), its place is free again.
        wait_until(lambda: following(follow), "a follower taken again", DEADLINE, 0.1, bounded.log)
    finally:
        cancel_every_job(bounded)


def following(url: str) -> bool:
    with httpx.Client(timeout=30) as client, client.stream("GET", url) as stream:
        return stream.status_code == 200


# -- working directories ----------------------------------------------------------------------------------------


def test_an_ended_jobs_working_directory_stays_as_long_as_its_record(keyed: Server, keyed_root: Path) -> None:
    """What a job wrote can be looked at while the job is listed; its artifact is copied out, for its version."""
    state = keyed_root / "state"
    trained = start(keyed, {"C": 0.5}, "train", model="iris-trainer")
    done = finished(keyed, trained["id"], "train")
    assert done["state"] == "succeeded" and done["result"]["served_version"], done
    assert (state / "artifacts" / trained["id"] / "model.pickle").is_file()
    assert (state / "jobs" / trained["id"]).is_dir()


def test_the_working_directories_of_purged_and_forgotten_jobs_are_removed_at_startup(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = JobStore(default_url(str(state)))
    try:
        old = store.create("iris-trainer", "1", "train", {"C": 1.0})
        store.finish(old.id, JobState.FAILED, error="long ago")
        with store.engine.begin() as connection:  # finished two hours ago: past a retention of an hour
            connection.execute(jobs.update().where(jobs.c.id == old.id).values(finished=now() - timedelta(hours=2)))
        queued = store.create("iris-trainer", "1", "train", {"C": 1.0})
    finally:
        store.close()
    forgotten = str(uuid.uuid4())  # a job purged by a server that kept every working directory
    elsewhere = str(uuid.uuid4())  # a running job of another database sharing this state directory
    for name in (old.id, forgotten, queued.id, "notes", elsewhere):
        (state / "jobs" / name).mkdir(parents=True)
        (state / "jobs" / name / "file").write_text("data")
    two_hours_ago = time.time() - 7200
    for name in (old.id, forgotten):
        os.utime(state / "jobs" / name, (two_hours_ago, two_hours_ago))
    with trainer_server(tmp_path, "--job-retention", "3600", "--max-queued-jobs", "10") as server:
        wait_until(lambda: not (state / "jobs" / old.id).exists(), "the purged job's directory removed", DEADLINE,
                   0.1, server.log)  # fmt: skip
        wait_until(lambda: not (state / "jobs" / forgotten).exists(), "a forgotten job's directory removed",
                   DEADLINE, 0.1, server.log)  # fmt: skip
        assert httpx.get(f"{server.url}/jobs/{old.id}").status_code == 404
        assert (state / "jobs" / "notes" / "file").is_file()  # not a job's: left alone
        assert (state / "jobs" / elsewhere / "file").is_file()  # changed within the retention: maybe another's
        cancel_every_job(server)
    assert (state / "jobs" / queued.id / "file").is_file()  # its job is still listed (ended or cancelled)


# -- the environment of a job's process -------------------------------------------------------------------------


def test_a_jobs_process_has_no_secret_and_no_setting_of_the_server_in_its_environment(
    keyed: Server, keyed_root: Path
) -> None:
    job = hanging(keyed, "train")
    try:
        raw = Path(f"/proc/{job['pid']}/environ").read_bytes()
        environment = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        assert "PATH" in environment  # what it was given, read whole
        assert "STEVEDORE_DATABASE_URL" not in environment and "STEVEDORE_API_KEYS" not in environment
        assert ENV_KEY.encode() not in raw and database_url(keyed_root).encode() not in raw
        settings = sorted(name for name in environment if name.startswith("STEVEDORE_") and name != "STEVEDORE_JOB")
        assert settings == [], settings
    finally:
        httpx.delete(f"{keyed.url}/jobs/{job['id']}", headers=auth("train"))
        finished(keyed, job["id"], "train")


# -- query parameters -------------------------------------------------------------------------------------------


#: Integers ``str.isdigit`` takes and ``int`` refuses (a superscript, Arabic-Indic digits, more digits than ``int``
#: reads), and other values that are no integer of ASCII digits.
NOT_INTEGERS = ["²", "١٢", "9" * 5000, "1e3", "-1", " 5", "5\n", "0x10", ""]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=lambda value: repr(value[:8]))
@pytest.mark.parametrize("path, name", [("/jobs", "limit"), ("/jobs", "offset"), ("/jobs/{job}/logs", "after"),
                                        ("/jobs/{job}/logs", "limit")])  # fmt: skip
def test_an_integer_query_parameter_takes_ascii_digits_only(bounded: Server, path: str, name: str, value: str) -> None:
    response = httpx.get(bounded.url + path.replace("{job}", str(uuid.uuid4())), params={name: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith(f"query parameter {name}: ") and "is not an integer from" in error, error
    assert len(error) < 200
