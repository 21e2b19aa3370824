"""Jobs across restarts of a real ``stevedore-server run``: killed mid-job, and stopped with SIGTERM mid-job.

The server runs in a fresh virtual environment with the trainer test plugin installed from its wheel, as a
user has it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from stevedore_server.jobs.records import JobState, default_url
from stevedore_server.jobs.store import JobStore

from .helpers import wait_until
from .venvs import Server, Venv, ready_server

pytestmark = [pytest.mark.server, pytest.mark.venv]

GRACE = 1.0
DEADLINE = 90.0

#: Starts a ready server of the trainer plugin: (log file, arguments) -> the server.
Serve = Callable[..., Server]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def serve(trainer_venv: Venv, state_dir: Path) -> Serve:
    """Servers of the trainer plugin, each ready, sharing ``state_dir``."""
    settings = {
        "STEVEDORE_STATE_DIR": str(state_dir),
        "STEVEDORE_JOB_GRACE_PERIOD": str(GRACE),
        "STEVEDORE_PLUGINS": "stevedore-test-trainer",
    }

    def start(log: Path, *args: str) -> Server:
        return ready_server(trainer_venv, log, *args, deadline=DEADLINE, **settings)

    return start


def hanging_job(server: Server) -> dict[str, Any]:
    response = httpx.post(server.url + "/models/misbehaving-trainer/train", json={"mode": "hang"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    stop_at = time.monotonic() + DEADLINE
    while time.monotonic() < stop_at:
        job: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}").json()
        if job["message"] == "hanging":
            return job
        time.sleep(0.1)
    raise AssertionError(f"the job never hung: {job}\n{server.log()}")


def final_state(server: Server, job_id: str) -> str:
    """The job's state once it has left queued and running (its process may be gone a moment before)."""
    stop_at = time.monotonic() + DEADLINE
    while time.monotonic() < stop_at:
        state: str = httpx.get(f"{server.url}/jobs/{job_id}").json()["state"]
        if state not in ("queued", "running"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never finished")


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie that nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def gone_within(pid: int, seconds: float) -> bool:
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def stored_state(state_dir: Path, job_id: str) -> JobState:
    store = JobStore(default_url(str(state_dir)))
    try:
        job = store.get(job_id)
    finally:
        store.close()
    assert job is not None
    return job.state


def test_a_job_of_a_killed_server_is_interrupted_at_the_next_start_with_its_logs(
    state_dir: Path, tmp_path: Path, serve: Serve
) -> None:
    first = serve(tmp_path / "first.log")
    try:
        job = hanging_job(first)
        os.kill(first.process.pid, signal.SIGKILL)  # no lifespan exit: the job is left running, unseen
        first.process.wait(timeout=10)
    finally:
        first.stop()
    assert not gone(job["pid"]), "the job's process should outlive its killed server"
    assert stored_state(state_dir, job["id"]) is JobState.RUNNING
    second = serve(tmp_path / "second.log")
    try:
        found = httpx.get(f"{second.url}/jobs/{job['id']}").json()
        assert found["state"] == "interrupted", found
        lines = [line["line"] for line in httpx.get(f"{second.url}/jobs/{job['id']}/logs").json()["lines"]]
        assert any("misbehaving: hang" in line for line in lines)
        assert any("interrupted" in line for line in lines)
        assert gone_within(job["pid"], GRACE + 3.0), "the leftover job process was not stopped"
    finally:
        second.stop()


def test_sigterm_to_the_server_interrupts_and_stops_its_running_job(
    state_dir: Path, tmp_path: Path, serve: Serve
) -> None:
    server = serve(tmp_path / "server.log")
    try:
        job = hanging_job(server)
    finally:
        assert server.stop() == 0, server.log()
    assert gone(job["pid"])
    assert stored_state(state_dir, job["id"]) is JobState.INTERRUPTED


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_job_started_just_before_a_stop_of_the_whole_group_is_interrupted(
    state_dir: Path, tmp_path: Path, serve: Serve, workers: str, signum: signal.Signals
) -> None:
    # systemd's stop, or a terminal's Ctrl+C: the signal goes to every process of the server's group. The job's
    # process leads a session of its own from its start, so the signal never reaches it; the server stops it.
    server = serve(tmp_path / "server.log", "--workers", workers)
    try:
        response = httpx.post(server.url + "/models/misbehaving-trainer/train", json={"mode": "hang"})
        assert response.status_code == 202, response.text
        job = running_job(server, response.json()["id"])
        assert os.getpgid(job["pid"]) == job["pid"] != os.getpgid(server.process.pid)
        time.sleep(0.1)  # the scenario, not a synchronisation: the job's process is still starting
        server.signal_group(signum)
        assert server.process.wait(timeout=DEADLINE) == 0, server.log()
    finally:
        server.stop()
    assert stored_state(state_dir, job["id"]) is JobState.INTERRUPTED, server.log()
    assert gone(job["pid"])


def test_a_job_whose_process_dies_while_the_server_stops_is_interrupted_and_the_queued_wait(
    state_dir: Path, tmp_path: Path, serve: Serve
) -> None:
    # A long shutdown delay: the server drains (and still answers) for the whole test.
    server = serve(tmp_path / "server.log", "--shutdown-delay", "600")
    try:
        job = hanging_job(server)
        queued = httpx.post(server.url + "/models/misbehaving-trainer/train", json={"mode": "hang"}).json()
        os.kill(server.process.pid, signal.SIGTERM)
        server.wait_for("/readyz", status=503)
        os.killpg(job["pid"], signal.SIGKILL)  # as a stop signal would, had it reached the job
        assert final_state(server, job["id"]) == "interrupted", server.log()
        # Its place is free, and still the queued job does not start: it waits for the next server.
        wait_for_line(server, f"job {queued['id']} stays queued: this server is stopping")
        assert httpx.get(f"{server.url}/jobs/{queued['id']}").json()["state"] == "queued"
    finally:
        server.signal_group(signal.SIGKILL)
        server.stop()
        kill_job_processes(state_dir)


def kill_job_processes(state_dir: Path) -> None:
    """SIGKILL the process group of every job the store has running: a server killed leaves them (the next one
    would interrupt them), and a test must not."""
    store = JobStore(default_url(str(state_dir)))
    try:
        for job in store.running():
            if job.pgid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.pgid, signal.SIGKILL)
    finally:
        store.close()


def wait_for_line(server: Server, line: str) -> None:
    wait_until(lambda: line in server.log(), f"the log line {line!r}", DEADLINE, explain=server.log)


def test_a_worker_killed_with_its_job_leaves_no_running_job_in_the_metrics(
    state_dir: Path, tmp_path: Path, serve: Serve
) -> None:
    server = serve(tmp_path / "server.log", "--workers", "2")
    try:
        job = hanging_job(server)
        assert jobs_running(server) == 1
        worker = parent_of(job["pid"])  # the uvicorn worker that started the job's process
        os.kill(worker, signal.SIGKILL)
        wait_for_line(server, f"Child process [{worker}] died")
        server.wait_for("/readyz")
        wait_until(lambda: jobs_running(server) == 0, "the killed worker's job no longer counted", DEADLINE, 0.2,
                   server.log)  # fmt: skip
    finally:
        server.signal_group(signal.SIGKILL)
        server.stop()
        kill_job_processes(state_dir)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def jobs_running(server: Server) -> float:
    """``stevedore_jobs_running`` summed over its series, as ``/metrics`` gives it."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    series = [line for line in text.splitlines() if line.startswith("stevedore_jobs_running{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in series)


def running_job(server: Server, job_id: str) -> dict[str, Any]:
    """The job once its process has started (its pid is known)."""
    stop_at = time.monotonic() + DEADLINE
    while time.monotonic() < stop_at:
        job: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}").json()
        if job["state"] == "running" and job.get("pid"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"the job never started: {job}\n{server.log()}")


def test_the_jobs_commands_drive_a_running_server(state_dir: Path, tmp_path: Path, serve: Serve) -> None:
    from click.testing import CliRunner

    from stevedore_server.cli import main

    server = serve(tmp_path / "server.log")
    try:
        job = hanging_job(server)
        runner = CliRunner()
        listed = runner.invoke(main, ["jobs", "list", "--url", server.url, "--state", "running"])
        assert listed.exit_code == 0 and job["id"] in listed.output and "running" in listed.output
        shown = runner.invoke(main, ["jobs", "show", job["id"], "--url", server.url])
        assert shown.exit_code == 0 and json.loads(shown.output)["params"] == {"mode": "hang"}
        logs = runner.invoke(main, ["jobs", "logs", job["id"], "--url", server.url])
        assert logs.exit_code == 0 and "misbehaving: hang" in logs.output
        cancelled = runner.invoke(main, ["jobs", "cancel", job["id"], "--url", server.url])
        assert cancelled.exit_code == 0 and job["id"] in cancelled.output
        assert gone_within(job["pid"], GRACE + 3.0)
        assert final_state(server, job["id"]) == "cancelled"
        again = runner.invoke(main, ["jobs", "cancel", job["id"], "--url", server.url])
        assert again.exit_code != 0 and "409" in again.output and "already finished" in again.output
        missing = runner.invoke(main, ["jobs", "show", "no-such-job", "--url", server.url])
        assert missing.exit_code != 0 and "404" in missing.output
    finally:
        server.stop()


def test_two_workers_share_one_job_list_and_start_each_job_once(state_dir: Path, tmp_path: Path, serve: Serve) -> None:
    server = serve(tmp_path / "server.log", "--workers", "2")
    try:
        ids = []
        for _ in range(4):
            response = httpx.post(server.url + "/models/iris-trainer/train", json={"C": 1.0})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        stop_at = time.monotonic() + DEADLINE * 2
        while time.monotonic() < stop_at:
            listed = {job["id"]: job for job in httpx.get(server.url + "/jobs").json()["jobs"]}
            assert set(listed) == set(ids)  # whichever worker answers, the same list
            if all(job["state"] in ("succeeded", "failed") for job in listed.values()):
                break
            time.sleep(0.2)
        assert all(job["state"] == "succeeded" for job in listed.values()), listed
        for job_id in ids:  # a job started twice would have logged twice
            lines = httpx.get(f"{server.url}/jobs/{job_id}/logs").json()["lines"]
            assert sum("loading the iris data set" in line["line"] for line in lines) == 1, lines
        # A cancel reaches the job whichever worker takes the request (the owner polls for it).
        hanging = hanging_job(server)
        for _ in range(2):
            httpx.delete(f"{server.url}/jobs/{hanging['id']}")
        assert gone_within(hanging["pid"], GRACE + 5.0)
        assert final_state(server, hanging["id"]) == "cancelled"
    finally:
        assert server.stop() == 0, server.log()


def served_logged(server: Server, job_id: str) -> int:
    """How many server processes have logged serving the version ``job_id`` trained (the repository's line)."""
    return server.log().count(f"trained by job {job_id}, served")


def test_a_trained_version_is_served_by_every_worker_once_its_job_succeeded_and_after_a_restart(
    state_dir: Path, tmp_path: Path, serve: Serve
) -> None:
    row = [[5.1, 3.5, 1.4, 0.2]]
    first = serve(tmp_path / "first.log", "--workers", "2")
    try:
        response = httpx.post(first.url + "/models/iris-trainer/train", json={"C": 0.5})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert final_state(first, job_id) == "succeeded", first.log()
        version = httpx.get(f"{first.url}/jobs/{job_id}").json()["result"]["served_version"]
        # At once: the job succeeded only when both workers served the new version.
        for _ in range(20):  # a fresh connection each: the requests spread over the workers
            answer = httpx.post(f"{first.url}/models/iris-trainer/versions/{version}/predict", json=row)
            assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
        stop_at = time.monotonic() + 5.0  # a line logged on a worker's event loop is written at its next turn
        while served_logged(first, job_id) < 2 and time.monotonic() < stop_at:
            time.sleep(0.2)
        assert served_logged(first, job_id) == 2, first.log()
    finally:
        assert first.stop() == 0, first.log()
    kept = state_dir / "artifacts" / job_id / "model.pickle"
    assert kept.is_file()
    second = serve(tmp_path / "second.log")
    try:
        entry = httpx.get(second.url + "/models/iris-trainer").json()
        assert version in entry["versions"] and entry["metadata"]["trained_by_job"] == job_id, entry
        answer = httpx.post(f"{second.url}/models/iris-trainer/versions/{version}/predict", json=row)
        assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
    finally:
        assert second.stop() == 0, second.log()


#: ``[models.NAME]`` tables running both trainer models in worker processes: under the server's interpreter,
#: or under the trainer environment's (``{python}``), from a server whose environment lacks the trainer plugin.
IN_PROCESSES = {
    "processes": "[models.iris-trainer]\nprocesses = 1\n[models.misbehaving-trainer]\nprocesses = 1\n",
    "python": '[models.iris-trainer]\npython = "{python}"\n[models.misbehaving-trainer]\npython = "{python}"\n',
}


@pytest.mark.parametrize("placement", list(IN_PROCESSES))
def test_a_model_in_worker_processes_is_trained_under_their_interpreter_and_its_new_version_served_by_them(
    trainer_venv: Venv, ops_venv: Venv, state_dir: Path, tmp_path: Path, placement: str
) -> None:
    python = trainer_venv.path / "bin" / "python"
    config = tmp_path / "stevedore.toml"
    config.write_text(IN_PROCESSES[placement].format(python=python))
    environment = trainer_venv if placement == "processes" else ops_venv
    settings = {"STEVEDORE_STATE_DIR": str(state_dir), "STEVEDORE_JOB_GRACE_PERIOD": str(GRACE)}
    server = ready_server(environment, tmp_path / "server.log", "--config", str(config), deadline=DEADLINE, **settings)
    row = [[5.1, 3.5, 1.4, 0.2]]
    try:
        response = httpx.post(server.url + "/models/iris-trainer/train", json={"C": 0.5})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert final_state(server, job_id) == "succeeded", server.log()
        job = httpx.get(f"{server.url}/jobs/{job_id}").json()
        lines = [line["line"] for line in httpx.get(f"{server.url}/jobs/{job_id}/logs").json()["lines"]]
        assert f"training under {python}" in "\n".join(lines), lines
        version = job["result"]["served_version"]
        assert version is not None, lines
        entry = httpx.get(server.url + "/models/iris-trainer").json()
        assert version in entry["versions"] and entry["metadata"]["trained_by_job"] == job_id, entry
        new = httpx.get(f"{server.url}/models/iris-trainer/versions/{version}").json()
        assert new["metadata"]["runs_in"]["kind"] == "processes", new
        answer = httpx.post(f"{server.url}/models/iris-trainer/versions/{version}/predict", json=row)
        assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
        # A long prediction as a job, and a hanging training cancelled: in the model's interpreter too.
        predicted = httpx.post(f"{server.url}/models/iris-trainer/versions/{version}/jobs/predict", json=row)
        assert predicted.status_code == 202, predicted.text
        assert final_state(server, predicted.json()["id"]) == "succeeded", server.log()
        assert httpx.get(f"{server.url}/jobs/{predicted.json()['id']}").json()["result"] == [0]
        hanging = hanging_job(server)
        command = Path(f"/proc/{hanging['pid']}/cmdline").read_bytes().split(b"\0")
        assert command[0].decode() == str(python), command
        assert httpx.delete(f"{server.url}/jobs/{hanging['id']}").status_code in (200, 202)
        assert final_state(server, hanging["id"]) == "cancelled"
        assert gone_within(hanging["pid"], GRACE + 3.0), "the cancelled job's process is still there"
    finally:
        assert server.stop() == 0, server.log()
