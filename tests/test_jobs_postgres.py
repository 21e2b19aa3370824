"""The jobs on a real PostgreSQL server: a throwaway cluster on a free loopback port, started by the tests.

Debian's PostgreSQL refuses to run as root, so the cluster runs as the
``postgres`` user when the tests are root. Skipped where the PostgreSQL server
is not installed, except under ``CI``; psycopg is a test dependency, imported
as any other (its absence is an error, never a skip).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from stevedore_server.base.settings import Settings
from stevedore_server.jobs.records import JobState
from stevedore_server.jobs.store import JobStore
from stevedore_server.kit.loopback import free_ports
from tests.helpers import Registers, wait_until
from tests.postgres import TOOLS, as_postgres, tool
from tests.test_jobs import GRACE, group_gone_within, start, wait_for, wait_until_hanging
from tests.venvs import Venv, ready_server


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster on a free loopback port, run as the ``postgres`` user when the tests are
    root (Debian's PostgreSQL refuses root); stopped and started again as a test needs."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        """Its base URL: a database name to append."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        command = [str(tool("pg_ctl")), "-D", str(self.root / "data"), "-o", options, "-l", str(self.root / "log")]
        subprocess.run(as_postgres([*command, "-w", "start"]), check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        command = [str(tool("pg_ctl")), "-D", str(self.root / "data"), "-m", mode, "-w", "stop"]
        subprocess.run(as_postgres(command), check=False, capture_output=True)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    missing = [name for name in TOOLS if tool(name) is None]
    if missing:
        if os.environ.get("CI"):
            raise AssertionError(f"PostgreSQL is not installed: {missing}")
        pytest.skip(f"PostgreSQL is not installed: {missing}")
    root = Path(tempfile.mkdtemp(prefix="stevedore-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    (port,) = free_ports(1)
    subprocess.run(as_postgres([str(tool("initdb")), "-D", str(root / "data"), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)  # fmt: skip
    made = Cluster(root, port)
    made.start()
    try:
        yield made
    finally:
        made.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster of its own for this module; its base URL (a database name to append)."""
    with cluster() as running:
        yield running.url


def new_database(base_url: str) -> str:
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url + "/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"


@pytest.fixture
def database_url(postgres_server: str) -> str:
    """A fresh database of the cluster for one test."""
    return new_database(postgres_server)


@pytest.fixture
def pg_client(
    make_client: Callable[..., TestClient], trainers: Registers, database_url: str, tmp_path: Path
) -> TestClient:
    settings = Settings(database_url=database_url, state_dir=str(tmp_path / "state"), job_grace_period=GRACE)
    return make_client(trainers, settings=settings)


def test_a_training_succeeds_with_its_jobs_in_postgresql(pg_client: TestClient, database_url: str) -> None:
    job = start(pg_client, "iris-trainer", {"C": 1.0})
    done = wait_for(pg_client, job["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["result"]["accuracy"] > 0.9
    assert done["duration"] >= 0 and done["finished"].endswith("Z")
    store = JobStore(database_url)
    stored = store.get(job["id"])
    assert stored is not None and stored.state is JobState.SUCCEEDED
    assert any("loading the iris data set" in line["line"] for line in store.logs(job["id"]))
    store.close()


def test_failures_and_cancel_on_postgresql(pg_client: TestClient) -> None:
    failed = start(pg_client, "misbehaving-trainer", {"mode": "unpicklable"})
    assert "Unpicklable" in wait_for(pg_client, failed["id"], "failed")["error"]
    hanging = wait_until_hanging(pg_client, start(pg_client, "misbehaving-trainer", {"mode": "stubborn"})["id"])
    pg_client.delete(f"/jobs/{hanging['id']}")
    assert group_gone_within(hanging["pid"], GRACE + 2.0)
    assert wait_for(pg_client, hanging["id"], "cancelled")["state"] == "cancelled"
    listed = pg_client.get("/jobs", params={"state": "cancelled"}).json()["jobs"]
    assert [item["id"] for item in listed] == [hanging["id"]]


def test_a_job_left_running_is_interrupted_at_startup_on_postgresql(
    make_client: Callable[..., TestClient], trainers: Registers, database_url: str, tmp_path: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        store = JobStore(database_url)
        job = store.create("misbehaving-trainer", "1", "train", {"mode": "hang"})
        assert store.claim(job.id, f"{socket.gethostname()}:{dead.pid}")
        assert not store.claim(job.id, "another:1")  # claimed once only
        store.started(job.id, leftover.pid)
        store.add_log(job.id, "info", "misbehaving: hang")
        store.close()
        settings = Settings(database_url=database_url, state_dir=str(tmp_path / "state"), job_grace_period=GRACE)
        client = make_client(trainers, settings=settings)
        found = client.get(f"/jobs/{job.id}").json()
        assert found["state"] == "interrupted"
        lines = [line["line"] for line in client.get(f"/jobs/{job.id}/logs").json()["lines"]]
        assert lines[0] == "misbehaving: hang" and "interrupted" in lines[-1]
        assert leftover.wait(timeout=GRACE + 2.0) < 0
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_postgresql_database_made_before_migrations_is_adopted(database_url: str) -> None:
    from tests.test_migrations import database_at, head, revision

    database_at(database_url, "0001", unversioned=True)  # what the server made before migrations
    assert revision(database_url) is None
    store = JobStore(database_url)
    assert store.trained() == []
    store.close()
    assert revision(database_url) == head()


def test_processes_migrating_a_fresh_postgresql_database_at_once_all_succeed(database_url: str) -> None:
    from tests.test_migrations import head, open_at_once, revision

    open_at_once(database_url, processes=3)
    assert revision(database_url) == head()


@pytest.mark.venv
@pytest.mark.server
def test_a_password_in_the_database_url_is_nowhere_in_the_log_or_the_answers(
    tmp_path: Path, database_url: str, trainer_venv: Venv
) -> None:
    import httpx

    from tests.test_jobs_server import DEADLINE, final_state

    password = "hunter2-secret"  # the cluster trusts loopback: the password is sent, and not needed
    settings = {
        "STEVEDORE_DATABASE_URL": database_url.replace("postgres@", f"postgres:{password}@"),
        "STEVEDORE_STATE_DIR": str(tmp_path / "state"),
        "STEVEDORE_PLUGINS": "stevedore-test-trainer",
    }
    server = ready_server(trainer_venv, tmp_path / "server.log", "--log-level", "debug", deadline=DEADLINE, **settings)
    try:
        job_id = httpx.post(server.url + "/models/iris-trainer/train", json={"C": 1.0}).json()["id"]
        assert final_state(server, job_id) == "succeeded", server.log()
        paths = ["/healthz", "/readyz", "/models", "/models/iris-trainer", "/jobs", f"/jobs/{job_id}",
                 f"/jobs/{job_id}/logs", "/metrics", "/openapi.json", "/v2", "/"]  # fmt: skip
        for path in paths:
            answer = httpx.get(server.url + path)
            assert answer.status_code == 200 and password not in answer.text, path
    finally:
        assert server.stop() == 0, server.log()
    assert "job " + job_id in server.log() and password not in server.log()


def test_a_database_outage_is_a_503_and_the_running_job_is_still_followed(
    make_client: Callable[..., TestClient], trainers: Registers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "stevedore.jobs")
    with cluster() as database:
        url = new_database(database.url)
        settings = Settings(database_url=url, state_dir=str(tmp_path / "state"), job_grace_period=GRACE)
        client = make_client(trainers, settings=settings)
        job = wait_until_hanging(client, start(client, "misbehaving-trainer", {"mode": "stubborn"})["id"])
        database.stop()
        for answer in (client.get(f"/jobs/{job['id']}"), client.delete(f"/jobs/{job['id']}"), client.get("/jobs")):
            assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
            assert str(database.port) not in answer.text and "Traceback" not in answer.text
        # The job's supervisor met the outage too (it looks for cancels every second), and follows the job on.
        wait_until(lambda: "cannot be reached (looking for cancels)" in caplog.text, "the supervisor seeing it")
        assert not group_gone_within(job["pid"], 0.0)
        database.start()
        assert client.delete(f"/jobs/{job['id']}").status_code == 202
        assert group_gone_within(job["pid"], GRACE + 5.0)
        assert wait_for(client, job["id"], "cancelled")["state"] == "cancelled"
        wait_until(lambda: "the jobs database is reachable again" in caplog.text, "the database seen back")
        warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert len([record for record in warnings if "cannot be reached" in record.getMessage()]) == 1, caplog.text
        assert not any(record.exc_info for record in warnings)  # said once, not a traceback a second
