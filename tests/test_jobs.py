"""Training jobs in real spawned processes: start, progress, result, 422, cancel, every failure, restarts."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from stevedore_server.base.settings import Settings
from stevedore_server.jobs.records import DATABASE_FILE, JobState, TrainedVersion, ago, default_url, now, sqlite_file
from stevedore_server.jobs.store import JobStore
from stevedore_server.jobs.store import jobs as jobs_table
from tests.helpers import Registers

GRACE = 1.0
#: Seconds a spawned job process may take to import scikit-learn and start on a busy machine.
DEADLINE = 60.0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def jobs_client(make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path) -> TestClient:
    settings = Settings(state_dir=str(state_dir), job_grace_period=GRACE, grpc_port=0)
    return make_client(trainers, settings=settings)


def start(client: TestClient, model: str, params: Any) -> dict[str, Any]:
    response = client.post(f"/models/{model}/train", json=params)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def wait_for(client: TestClient, job_id: str, *states: str, deadline: float = DEADLINE) -> dict[str, Any]:
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {states} within {deadline}s: {job}")


def wait_until_hanging(client: TestClient, job_id: str) -> dict[str, Any]:
    """A hanging job once it has reported its progress (so its process has made its own group)."""
    stop_at = time.monotonic() + DEADLINE
    while time.monotonic() < stop_at:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["message"] == "hanging":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never hung: {job}")


def group_gone_within(pgid: int, seconds: float) -> bool:
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_training_runs_to_its_result_with_progress_and_logs(jobs_client: TestClient, state_dir: Path) -> None:
    job = start(jobs_client, "iris-trainer", {"C": 0.5, "max_iter": 500})
    assert job["state"] == "queued" and job["params"] == {"C": 0.5, "max_iter": 500}
    done = wait_for(jobs_client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", done
    assert done["result"]["accuracy"] > 0.9
    assert done["progress"] == 1.0 and done["message"] == "fitted"
    assert done["started"] and done["finished"] and done["duration"] >= 0
    assert Path(done["result"]["artifact"]).parent == state_dir / "jobs" / job["id"]
    lines = [line["line"] for line in jobs_client.get(f"/jobs/{job['id']}/logs").json()["lines"]]
    assert any("loading the iris data set" in line for line in lines)
    assert any("training accuracy" in line for line in lines)
    assert (state_dir / DATABASE_FILE).exists()
    listed = jobs_client.get("/jobs", params={"model": "iris-trainer", "state": "succeeded"}).json()["jobs"]
    assert [item["id"] for item in listed] == [job["id"]]
    metrics = jobs_client.get("/metrics").text
    labels = 'kind="train",model="iris-trainer",state="succeeded"'
    assert f"stevedore_jobs_finished_total{{{labels}}} 1.0" in metrics
    assert f"stevedore_job_duration_seconds_count{{{labels}}} 1.0" in metrics
    assert 'stevedore_jobs_running{kind="train",model="iris-trainer"} 0.0' in metrics


def test_parameters_are_checked_against_the_train_schema(jobs_client: TestClient) -> None:
    response = jobs_client.post("/models/iris-trainer/train", json={"C": -1, "max_iter": "many"})
    assert response.status_code == 422
    assert {detail["path"] for detail in response.json()["details"]} == {"/C", "/max_iter"}
    assert jobs_client.get("/jobs").json()["jobs"] == []


def test_a_model_without_a_train_schema_cannot_be_trained(
    make_client: Callable[..., TestClient], state_dir: Path
) -> None:
    from tests.predictors import RowSum

    client = make_client(Registers(RowSum()), settings=Settings(state_dir=str(state_dir)))
    assert client.post("/models/rowsum/train", json={}).status_code == 404
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs").json()["jobs"] == []
    assert not (state_dir / DATABASE_FILE).exists()  # a server that never ran a job made no database


def test_list_filters_and_pages(jobs_client: TestClient) -> None:
    ids = [start(jobs_client, "misbehaving-trainer", {"mode": "raise"})["id"] for _ in range(3)]
    for job_id in ids:
        wait_for(jobs_client, job_id, "failed")
    page = jobs_client.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert len(page["jobs"]) == 2 and page["limit"] == 2 and page["offset"] == 1
    assert jobs_client.get("/jobs", params={"model": "iris-trainer"}).json()["jobs"] == []
    assert jobs_client.get("/jobs", params={"state": "bogus"}).status_code == 400
    assert jobs_client.get("/jobs", params={"limit": 0}).status_code == 400


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("raise", "ValueError: the data is bad"),
        ("unpicklable", "Unpicklable: holds a lock"),
        ("abort", "was killed by SIGABRT"),
        ("not-json", "TypeError"),
    ],
)
def test_each_failure_ends_failed_with_its_reason(jobs_client: TestClient, mode: str, reason: str) -> None:
    job = start(jobs_client, "misbehaving-trainer", {"mode": mode})
    done = wait_for(jobs_client, job["id"], "succeeded", "failed", "cancelled", "interrupted")
    assert done["state"] == "failed", done
    assert reason in done["error"]
    assert done["result"] is None


def test_the_traceback_of_a_failed_training_is_in_its_logs(jobs_client: TestClient) -> None:
    job = start(jobs_client, "misbehaving-trainer", {"mode": "raise"})
    wait_for(jobs_client, job["id"], "failed")
    lines = "\n".join(line["line"] for line in jobs_client.get(f"/jobs/{job['id']}/logs").json()["lines"])
    assert "Traceback" in lines and "ValueError: the data is bad" in lines


@pytest.mark.parametrize("mode", ["hang", "stubborn"])
def test_cancel_stops_the_jobs_process_group_within_the_grace_period(jobs_client: TestClient, mode: str) -> None:
    job = wait_until_hanging(jobs_client, start(jobs_client, "misbehaving-trainer", {"mode": mode})["id"])
    pgid = job["pid"]
    assert pgid and os.getpgid(pgid) == pgid  # the job leads a process group of its own
    response = jobs_client.delete(f"/jobs/{job['id']}")
    assert response.status_code in (200, 202)
    assert group_gone_within(pgid, GRACE + 2.0)
    done = wait_for(jobs_client, job["id"], "cancelled", "failed", "succeeded", deadline=GRACE + 5)
    assert done["state"] == "cancelled" and done["error"] == "cancelled"
    assert [item["id"] for item in jobs_client.get("/jobs", params={"state": "cancelled"}).json()["jobs"]] == [
        job["id"]
    ]
    assert jobs_client.delete(f"/jobs/{job['id']}").status_code == 409


def test_jobs_beyond_max_jobs_wait_queued_and_cancel_at_once(jobs_client: TestClient, state_dir: Path) -> None:
    first = wait_until_hanging(jobs_client, start(jobs_client, "misbehaving-trainer", {"mode": "hang"})["id"])
    second = start(jobs_client, "misbehaving-trainer", {"mode": "hang"})
    # Each pass of the dispatcher serves the versions recorded since its last, then looks at the queue: the pass
    # that serves the first witness looked at it after the second job was queued, and the one that serves the
    # second witness (recorded once the first is served) began after that look ended.
    for witness in ("witness-1", "witness-2"):
        served_once_recorded(jobs_client, state_dir, witness)
    assert jobs_client.get(f"/jobs/{second['id']}").json()["state"] == "queued"
    response = jobs_client.delete(f"/jobs/{second['id']}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    jobs_client.delete(f"/jobs/{first['id']}")
    assert wait_for(jobs_client, first["id"], "cancelled")["state"] == "cancelled"


def served_once_recorded(client: TestClient, state_dir: Path, job_id: str) -> None:
    """Record a version of ``iris-trainer`` as another server process sharing the store would, and wait until this
    one serves it."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    artifact = state_dir / "artifacts" / job_id / "model.pickle"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True))))
    version = f"1+job.{job_id}"
    store = JobStore(default_url(str(state_dir)))
    store.record_trained(TrainedVersion("iris-trainer", version, "1", job_id, str(artifact), now()))
    store.close()
    stop_at = time.monotonic() + DEADLINE
    while version not in (versions := client.get("/models/iris-trainer").json()["versions"]):
        assert time.monotonic() < stop_at, f"version {version} not served within {DEADLINE}s: {versions}"
        time.sleep(0.1)


def test_a_lot_of_log_is_kept(jobs_client: TestClient) -> None:
    job = start(jobs_client, "misbehaving-trainer", {"mode": "log"})
    assert wait_for(jobs_client, job["id"], "succeeded", "failed")["state"] == "succeeded"
    lines: list[dict[str, Any]] = []
    while True:  # pages of at most 1000 lines, each after the last line seen
        after = {"after": lines[-1]["id"]} if lines else {}
        page = jobs_client.get(f"/jobs/{job['id']}/logs", params=after).json()["lines"]
        if not page:
            break
        assert len(page) <= 1000
        lines += page
    assert len(lines) == 2001 and lines[-1]["line"].endswith("line 1999")


def test_shutdown_interrupts_running_jobs_and_stops_them(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path
) -> None:
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_grace_period=GRACE))
    job = wait_until_hanging(client, start(client, "misbehaving-trainer", {"mode": "stubborn"})["id"])
    client.__exit__(None, None, None)  # the app's lifespan ends, as on SIGTERM
    assert group_gone_within(job["pid"], 1.0)
    store = JobStore(default_url(str(state_dir)))
    stored = store.get(job["id"])
    assert stored is not None and stored.state is JobState.INTERRUPTED
    store.close()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (a server process killed mid-job)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def leftover_group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group left running by a job whose server was killed (its leader is this test's child, to reap)."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_job_left_running_by_a_killed_server_is_interrupted_at_startup_with_its_logs(
    make_client: Callable[..., TestClient],
    trainers: Registers,
    state_dir: Path,
    dead_pid: int,
    leftover_group: subprocess.Popen[bytes],
) -> None:
    store = JobStore(default_url(str(state_dir)))
    job = store.create("misbehaving-trainer", "1", "train", {"mode": "hang"})
    assert store.claim(job.id, f"{socket.gethostname()}:{dead_pid}")
    store.started(job.id, leftover_group.pid)
    store.add_log(job.id, "info", "misbehaving: hang")
    store.close()
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_grace_period=GRACE))
    found = client.get(f"/jobs/{job.id}").json()
    assert found["state"] == "interrupted" and found["finished"]
    lines = [line["line"] for line in client.get(f"/jobs/{job.id}/logs").json()["lines"]]
    assert lines[0] == "misbehaving: hang" and "interrupted" in lines[-1]
    assert leftover_group.wait(timeout=GRACE + 2.0) == -signal.SIGTERM


def test_a_pid_given_to_a_later_process_is_not_taken_for_the_jobs_server_nor_its_job(
    make_client: Callable[..., TestClient],
    trainers: Registers,
    state_dir: Path,
    leftover_group: subprocess.Popen[bytes],
) -> None:
    """The job's server pid and its process group's pid both belong to processes started after the job did
    (pids reused, as after a container restart): the job is interrupted all the same, and the stranger holding
    the group's number is left running."""
    stranger = leftover_group  # started now, an hour after the job below
    store = JobStore(default_url(str(state_dir)))
    job = store.create("misbehaving-trainer", "1", "train", {"mode": "hang"})
    hour_ago = time.time() - 3600
    assert store.claim(job.id, f"{socket.gethostname()}:{stranger.pid}:{hour_ago:.0f}")
    store.started(job.id, stranger.pid)
    with store.engine.begin() as connection:
        connection.execute(sa.update(jobs_table).values(started=ago(3600)).where(jobs_table.c.id == job.id))
    store.close()
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_grace_period=GRACE))
    assert client.get(f"/jobs/{job.id}").json()["state"] == "interrupted"
    time.sleep(GRACE + 0.5)
    assert stranger.poll() is None  # not ours: never signalled


def test_the_deepaas_train_routes_answer_in_deepaas_shape(jobs_client: TestClient) -> None:
    response = jobs_client.post("/v2/models/iris-trainer/train/", json={"C": 2.0})
    assert response.status_code == 200, response.text
    started = response.json()
    assert set(started) == {"date", "args", "uuid", "status"} and started["args"] == {"C": 2.0}
    assert started["status"] in ("pending", "running")
    done = wait_for(jobs_client, started["uuid"], "succeeded", "failed")
    assert done["state"] == "succeeded"
    training = jobs_client.get(f"/v2/models/iris-trainer/train/{started['uuid']}").json()
    assert training["status"] == "done" and training["result"]["accuracy"] > 0.9
    assert training["date"] == started["date"]
    listed = jobs_client.get("/v2/models/iris-trainer/train/").json()
    assert [item["uuid"] for item in listed] == [started["uuid"]]
    assert jobs_client.get(f"/v2/models/misbehaving-trainer/train/{started['uuid']}").status_code == 404
    assert jobs_client.post("/v2/models/iris-trainer/train/", json={"C": 0}).status_code == 422


def test_a_deepaas_cancel_answers_cancelled(jobs_client: TestClient) -> None:
    started = jobs_client.post("/v2/models/misbehaving-trainer/train", json={"mode": "hang"}).json()
    wait_until_hanging(jobs_client, started["uuid"])
    cancelled = jobs_client.delete(f"/v2/models/misbehaving-trainer/train/{started['uuid']}/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(jobs_client, started["uuid"], "cancelled")
    failed = jobs_client.get(f"/v2/models/misbehaving-trainer/train/{started['uuid']}").json()
    assert failed["status"] == "cancelled" and failed["message"] == "cancelled"


def test_the_jobs_routes_need_an_api_key_when_keys_are_set(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path
) -> None:
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), api_keys=("secret",)))
    assert client.get("/jobs").status_code == 401
    assert client.post("/models/iris-trainer/train", json={}).status_code == 401
    assert client.get("/v2/models/iris-trainer/train/").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer secret"}).status_code == 200


def test_the_readme_training_example_trains(
    make_client: Callable[..., TestClient], state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_docs import python_block

    (tmp_path / "readme_trainer.py").write_text(python_block("class TrainableIris(Predictor)"))
    monkeypatch.syspath_prepend(str(tmp_path))  # the job's spawned process imports the module too
    import readme_trainer

    client = make_client(Registers(readme_trainer.TrainableIris()), settings=Settings(state_dir=str(state_dir)))
    job = start(client, "trainable-iris", {"C": 0.5})
    done = wait_for(client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["result"]["accuracy"] > 0.9, done
    assert (state_dir / "jobs" / job["id"] / "model.pickle").exists()
    lines = [line["line"] for line in client.get(f"/jobs/{job['id']}/logs").json()["lines"]]
    assert lines == ["stevedore.job: loading the data"]


def test_log_lines_beyond_the_limit_are_dropped_and_counted(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path
) -> None:
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), max_job_log_lines=100))
    job = start(client, "misbehaving-trainer", {"mode": "log"})
    assert wait_for(client, job["id"], "succeeded", "failed")["state"] == "succeeded"
    lines = client.get(f"/jobs/{job['id']}/logs").json()["lines"]
    assert len(lines) == 101
    assert lines[-1]["line"] == "1901 more log lines dropped (max_job_log_lines)"


def test_finished_jobs_past_their_retention_are_deleted_with_their_logs(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path
) -> None:
    store = JobStore(default_url(str(state_dir)))
    finished = store.create("iris-trainer", "1", "train", {})
    store.add_log(finished.id, "info", "old")
    store.finish(finished.id, JobState.FAILED, error="long ago")
    queued = store.create("iris-trainer", "1", "train", {"C": 1.0})
    store.close()
    time.sleep(0.1)
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_retention=0.05))
    stop_at = time.monotonic() + 10
    while client.get(f"/jobs/{finished.id}").status_code != 404 and time.monotonic() < stop_at:
        time.sleep(0.1)
    assert client.get(f"/jobs/{finished.id}").status_code == 404
    assert client.get(f"/jobs/{queued.id}").status_code == 200  # not finished when purged


def test_logs_can_be_followed_as_server_sent_events_until_the_job_ends(jobs_client: TestClient) -> None:
    job = start(jobs_client, "iris-trainer", {"C": 1.0})
    events: list[tuple[str, dict[str, Any]]] = []
    with jobs_client.stream("GET", f"/jobs/{job['id']}/logs", params={"follow": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    assert [kind for kind, _ in events][-1] == "end"
    assert events[-1][1]["state"] == "succeeded"
    logged = [data["line"] for kind, data in events if kind == "log"]
    assert any("loading the iris data set" in line for line in logged)
    assert any("training accuracy" in line for line in logged)
    assert jobs_client.get("/jobs/nope/logs", params={"follow": "true"}).status_code == 404


def test_the_console_lists_the_jobs_and_shows_a_log(jobs_client: TestClient) -> None:
    """The console's jobs fragment (the browser test drives the page): each job with its state and a way to its
    log, a cancel button only for a job not finished; the log fragment shows the job's lines."""
    trained = start(jobs_client, "iris-trainer", {"C": 0.5})["id"]
    hanging = start(jobs_client, "misbehaving-trainer", {"mode": "hang"})["id"]
    wait_for(jobs_client, trained, "succeeded")
    wait_until_hanging(jobs_client, hanging)
    page = jobs_client.get("/console/fragments/jobs").text
    rows = dict(re.findall(r'<tr data-job="([^"]+)" data-state="([^"]+)">', page))
    assert rows == {trained: "succeeded", hanging: "running"}
    assert page.count("data-cancel=") == 1 and f'data-cancel="/jobs/{hanging}"' in page
    log = jobs_client.get(f"/console/fragments/jobs/{trained}/logs").text
    assert f"Log of job <code>{trained}</code>" in log and "serving the new version" in log
    assert jobs_client.get("/console/fragments/jobs/nope/logs").status_code == 404
    jobs_client.delete(f"/jobs/{hanging}")
    wait_for(jobs_client, hanging, "cancelled")


def test_a_long_predict_runs_as_a_job_and_keeps_its_result(jobs_client: TestClient) -> None:
    response = jobs_client.post("/models/iris-trainer/jobs/predict", json=[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "predict" and response.headers["location"] == f"/jobs/{job['id']}"
    done = wait_for(jobs_client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["result"] == [0, 2], done
    assert jobs_client.get("/jobs/" + job["id"]).json()["result"] == [0, 2]
    invalid = jobs_client.post("/models/iris-trainer/jobs/predict", json=[[1, 2]])
    assert invalid.status_code == 422 and invalid.json()["details"][0]["path"] == "/0"


def test_a_trained_artifact_is_served_as_a_new_version_after_its_self_test(
    jobs_client: TestClient, state_dir: Path
) -> None:
    job = start(jobs_client, "iris-trainer", {"C": 0.01, "max_iter": 50})
    done = wait_for(jobs_client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", done
    version = done["result"]["served_version"]
    assert version == "1+job." + job["id"].split("-")[0]
    entry = jobs_client.get("/models/iris-trainer").json()
    assert entry["version"] == version and entry["ready"] and entry["metadata"]["trained_by_job"] == job["id"]
    assert sorted(entry["versions"]) == ["1", version]
    response = jobs_client.post(f"/models/iris-trainer/versions/{version}/predict", json=[[5.1, 3.5, 1.4, 0.2]])
    assert response.status_code == 200 and response.json()["model_version"] == version
    lines = [line["line"] for line in jobs_client.get(f"/jobs/{job['id']}/logs").json()["lines"]]
    assert lines[-1] == f"serving the new version {version}"
    store = JobStore(default_url(str(state_dir)))
    (recorded,) = store.trained()
    store.close()
    assert (recorded.model, recorded.version, recorded.base_version, recorded.job_id) == (
        "iris-trainer", version, "1", job["id"],
    )  # fmt: skip
    assert recorded.artifact == str(state_dir.resolve() / "artifacts" / job["id"] / "model.pickle")
    assert Path(recorded.artifact).is_file()


def test_recorded_trained_versions_are_served_at_startup_and_a_broken_one_is_reported(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    artifacts = state_dir / "artifacts"
    good = artifacts / "good" / "model.pickle"
    good.parent.mkdir(parents=True)
    good.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(*load_iris(return_X_y=True))))
    broken = artifacts / "broken" / "model.pickle"
    broken.parent.mkdir()
    broken.write_bytes(b"not a pickle")
    store = JobStore(default_url(str(state_dir)))
    for job_id, artifact in [("good", good), ("gone", artifacts / "gone" / "model.pickle"), ("broken", broken)]:
        store.record_trained(TrainedVersion("iris-trainer", f"1+job.{job_id}", "1", job_id, str(artifact), now()))
    store.close()
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_grace_period=GRACE))
    entry = client.get("/models/iris-trainer").json()
    assert sorted(entry["versions"]) == ["1", "1+job.good"] and entry["metadata"]["trained_by_job"] == "good"
    answer = client.post("/models/iris-trainer/versions/1+job.good/predict", json=[[5.1, 3.5, 1.4, 0.2]])
    assert answer.status_code == 200 and answer.json()["model_version"] == "1+job.good"
    reported = [record.getMessage() for record in caplog.records if record.name == "stevedore.trained"]
    assert any("version 1+job.gone (trained by job gone) is not served" in line and "is gone" in line
               for line in reported), reported  # fmt: skip
    assert any("version 1+job.broken (trained by job broken) is not served" in line for line in reported), reported


def test_an_artifact_outside_the_jobs_workdir_is_not_served(jobs_client: TestClient) -> None:
    job = start(jobs_client, "misbehaving-trainer", {"mode": "escape"})
    done = wait_for(jobs_client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["result"]["served_version"] is None
    assert jobs_client.get("/models/misbehaving-trainer").json()["versions"] == ["1"]
    lines = [line["line"] for line in jobs_client.get(f"/jobs/{job['id']}/logs").json()["lines"]]
    assert "is no file in the job's workdir" in lines[-1]


def test_the_database_url_is_a_secret_like_the_api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from stevedore_server.base.errors import StartupError
    from stevedore_server.base.settings import MASK
    from stevedore_server.cli import main

    url = "postgresql://stevedore:hunter2-secret@db.example/jobs"
    settings = Settings.load({"STEVEDORE_DATABASE_URL": url})
    assert settings.database_url == url
    assert "database_url" not in settings.document()  # a generated Serve config (`ray --config-only`)
    assert settings.secret_env() == {"STEVEDORE_DATABASE_URL": url}  # the replicas' environment instead
    assert settings.masked()["database_url"] == MASK
    monkeypatch.setenv("STEVEDORE_DATABASE_URL", url)
    shown = CliRunner().invoke(main, ["config"])
    assert shown.exit_code == 0 and "hunter2" not in shown.output and MASK in shown.output
    monkeypatch.delenv("STEVEDORE_DATABASE_URL")
    flag = CliRunner().invoke(main, ["config", "--database-url", url])  # the flag, masked all the same
    assert flag.exit_code == 0 and "hunter2" not in flag.output and MASK in flag.output
    with pytest.raises(StartupError) as refused:
        Settings(database_url="postgresql://stevedore:hunter2-secret@db.example:port/jobs")
    assert "database_url" in str(refused.value) and "hunter2" not in str(refused.value)


def test_an_artifact_file_or_directory_is_kept_whole_under_the_state_directory(tmp_path: Path) -> None:
    from stevedore_server.jobs.versions import keep_artifact

    workdir = tmp_path / "jobs" / "job-1"
    (workdir / "model" / "weights").mkdir(parents=True)
    (workdir / "model" / "weights" / "layer.bin").write_bytes(b"weights")
    (workdir / "model.pickle").write_bytes(b"pickle")
    state = tmp_path / "state"
    kept = keep_artifact(state, "job-1", workdir / "model")
    assert kept == state / "artifacts" / "job-1" / "model"
    assert (kept / "weights" / "layer.bin").read_bytes() == b"weights"
    assert keep_artifact(state, "job-2", workdir / "model.pickle").read_bytes() == b"pickle"
    assert sorted(path.name for path in (state / "artifacts").iterdir()) == ["job-1", "job-2"]  # no partial copy


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///jobs.db",
        "sqlite:////var/lib/stevedore/jobs.db",
        "sqlite+pysqlite:///relative/dir/jobs.db",
        "sqlite:///jobs.db?mode=ro&timeout=5",
        "sqlite:///with%20space.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://user:secret@localhost:5432/jobs",
        "postgresql+psycopg://localhost/sqlite.db",
    ],
)
def test_the_database_file_is_read_from_the_url_as_sqlalchemy_reads_it(url: str) -> None:
    """``records.sqlite_file`` reads the URL without importing SQLAlchemy (at startup); it agrees with it."""
    parsed = sa.engine.make_url(url)
    is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    assert sqlite_file(url) == (Path(str(parsed.database)) if is_file else None)


def test_a_jobs_process_leads_its_session_without_the_servers_secrets(
    make_client: Callable[..., TestClient], trainers: Registers, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEVEDORE_API_KEYS", "not-for-the-job")
    monkeypatch.setenv("STEVEDORE_DATABASE_URL", "sqlite:///not-for-the-job.db")
    client = make_client(trainers, settings=Settings(state_dir=str(state_dir), job_grace_period=GRACE, grpc_port=0))
    job = wait_until_hanging(client, start(client, "misbehaving-trainer", {"mode": "hang"})["id"])
    pid = job["pid"]
    assert os.getsid(pid) == os.getpgid(pid) == pid  # a session of its own: no signal to the server's group
    names = {entry.split(b"=", 1)[0] for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if entry}
    assert b"PATH" in names and not {b"STEVEDORE_API_KEYS", b"STEVEDORE_DATABASE_URL"} & names
    assert client.delete(f"/jobs/{job['id']}").status_code == 202
    assert wait_for(client, job["id"], "cancelled")["state"] == "cancelled"
