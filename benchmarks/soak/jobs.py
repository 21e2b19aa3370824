"""The jobs the soak starts, followed to their final state, and the state each one should end in.

Expected final states, each a stated rule (``expectation``):

- a long prediction: ``succeeded``, its result the model's prediction for every row;
- a training of ``iris-trainer``: ``succeeded``, with the version it made served (``served_version``);
- a job whose process the soak killed with SIGKILL: ``failed``, with the reason the server records for a job
  whose process died (``jobs/supervisor.py``, ``outcome``): "the job's process was killed by SIGKILL without a
  result";
- a job running on the uvicorn worker the soak killed (its process was that worker's child when the soak first
  saw it, or at the kill): ``interrupted``, "the server running it stopped" (the worker that replaces the killed
  one finds the job left running by a server process that is gone: ``Jobs.recover``); a job running then whose
  worker the soak could not see (it had claimed the job but not started its process yet, or its process came
  and went between two looks): its own rule's state, or ``interrupted``;
- a hanging job the soak cancelled: ``cancelled``. One is kept running through the PostgreSQL outage and
  cancelled once the database is back (the server must ride out the outage: the job's process never touches
  the database, its supervisor does); others are those a fault could not use (they never ran in time). If the
  soak later killed the uvicorn worker that ran it, ``interrupted`` is right too: the worker may have died
  before it wrote the job's end, which its replacement then writes;
- a job found in the server's list that the soak never heard of (its submit's answer was lost to a fault):
  any final state.

A job still ``queued`` or ``running`` when the deadline passes is stuck; one the server no longer knows (404)
is lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from . import resources
from .clients import ROW, checked, http_client
from .records import JOBS, Recorder

FINAL = {"succeeded", "failed", "cancelled", "interrupted"}
LONG_PREDICT_ROWS = 50
KILLED_REASON = "the job's process was killed by SIGKILL without a result"
INTERRUPTED_REASON = "the server running it stopped"

#: What a job is for in the soak.
LONG_PREDICT, TRAINING, KILLED, WORKER_VICTIM, THROUGH_OUTAGE, UNRECORDED = (
    "long predict", "training", "process killed", "on the killed worker", "through the outage", "unrecorded",
)  # fmt: skip


@dataclass(frozen=True)
class WorkerKill:
    """What the jobs need to know of a uvicorn worker killed by the soak: when, and whose children were what."""

    wall: float
    worker: int
    #: Each living uvicorn worker's children just before the kill.
    children: dict[int, list[int]]

    def held(self, job: TrackedJob) -> bool | None:
        """Whether the killed worker held ``job`` when it was killed; None when that cannot be known (the job's
        process was never seen alive, and started before the kill)."""
        last = job.last or {}
        started, finished = timestamp(last.get("started")), timestamp(last.get("finished"))
        if started is None or started > self.wall or (finished is not None and finished <= self.wall):
            return False  # not running at the kill
        owner = job.owner or next((worker for worker, kids in self.children.items() if job.pid in kids), None)
        return None if owner is None else owner == self.worker


@dataclass
class TrackedJob:
    id: str
    purpose: str
    half: str
    #: The last answer of ``GET /jobs/ID`` (None until polled); ``missing`` once it answered 404.
    last: dict[str, Any] | None = None
    missing: bool = False
    expected: str = ""
    verdict: str = ""
    #: The uvicorn worker whose child the job's process was, when the soak first saw it alive.
    owner: int | None = None
    #: Whether the soak cancelled it.
    cancelled: bool = False

    @property
    def state(self) -> str:
        return "lost (404)" if self.missing else (self.last or {}).get("state", "unknown")

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def pid(self) -> int | None:
        return (self.last or {}).get("pid")


def timestamp(text: str | None) -> float | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class JobTracker:
    """The jobs of one half: submitted, polled, and judged at the end."""

    url: str
    #: The server's supervisor: a job's process is the child of one of its children.
    server_pid: int
    recorder: Recorder
    half: str
    jobs: dict[str, TrackedJob] = field(default_factory=dict)
    killed_jobs: set[str] = field(default_factory=set)
    worker_kills: list[WorkerKill] = field(default_factory=list)

    def submit(self, purpose: str, path: str, body: Any) -> TrackedJob | None:
        """Start a job (202 expected); the tracked job, or None if the server did not take it."""
        answer: dict[str, Any] = {}

        def right(response: httpx.Response) -> bool:
            answer.update(response.json())
            return bool(answer.get("id"))

        with http_client(self.url) as client:
            outcome = self.recorder.call(f"submit: {purpose}", JOBS,
                                         lambda: checked(lambda: client.post(path, json=body), right, 202))  # fmt: skip
        if not outcome.ok:
            return None
        job = TrackedJob(answer["id"], purpose, self.half, last=answer)
        self.jobs[job.id] = job
        return job

    def long_predict(self) -> TrackedJob | None:
        return self.submit(LONG_PREDICT, "/models/iris-trainer/jobs/predict", [ROW] * LONG_PREDICT_ROWS)

    def training(self) -> TrackedJob | None:
        return self.submit(TRAINING, "/models/iris-trainer/train", {"C": 0.5})

    def hanging(self, purpose: str) -> TrackedJob | None:
        """A job that runs until it is stopped (the misbehaving trainer's ``hang`` mode)."""
        return self.submit(purpose, "/models/misbehaving-trainer/train", {"mode": "hang"})

    def poll(self, job: TrackedJob, client: httpx.Client) -> None:
        answer: dict[str, Any] = {}

        def right(response: httpx.Response) -> bool:
            answer.update(response.json())
            return answer.get("id") == job.id

        outcome = self.recorder.call("poll: job", JOBS, lambda: checked(lambda: client.get(f"/jobs/{job.id}"), right))
        if outcome.ok:
            job.last = answer
            if job.owner is None and job.pid:
                job.owner = self.owner_of(job.pid)
        elif outcome.label == "HTTP 404":
            job.missing = True

    def owner_of(self, pid: int) -> int | None:
        """The uvicorn worker whose child process ``pid`` is (None if it is gone, or orphaned already)."""
        parent = resources.parent_of(pid)
        return parent if parent is not None and resources.parent_of(parent) == self.server_pid else None

    def poll_unfinished(self) -> None:
        with http_client(self.url) as client:
            for job in list(self.jobs.values()):
                if not job.final and not job.missing:
                    self.poll(job, client)

    def cancel(self, job: TrackedJob) -> None:
        """Cancel a hanging job (once its fault is over, or one a fault could not use): it must end cancelled."""
        job.cancelled = True
        with http_client(self.url) as client:
            self.recorder.call("cancel: job", JOBS, lambda: checked(lambda: client.delete(f"/jobs/{job.id}"),
                                                                    lambda r: True, (200, 202)))  # fmt: skip

    def wait_hanging(self, job: TrackedJob, deadline: float) -> bool:
        """Wait until the job's process runs its hanging loop (its pid known); False if it never does."""
        stop_at = time.monotonic() + deadline
        with http_client(self.url) as client:
            while time.monotonic() < stop_at:
                self.poll(job, client)
                if job.last is not None and job.last.get("message") == "hanging" and job.pid:
                    return True
                if job.final or job.missing:
                    return False
                time.sleep(0.2)
        return False

    def settle(self, deadline: float) -> None:
        """Poll until every job is final, or the deadline passes; then adopt the jobs the soak never heard of."""
        stop_at = time.monotonic() + deadline
        while time.monotonic() < stop_at and not all(job.final or job.missing for job in self.jobs.values()):
            self.poll_unfinished()
            time.sleep(0.5)
        self.adopt_unrecorded()

    def adopt_unrecorded(self) -> None:
        with http_client(self.url) as client:
            try:
                listed = client.get("/jobs", params={"limit": 1000}).json()["jobs"]
            except (httpx.TransportError, ValueError, KeyError):
                return
        for found in listed:
            if found["id"] not in self.jobs:
                self.jobs[found["id"]] = TrackedJob(found["id"], UNRECORDED, self.half, last=found)

    def judge(self) -> list[TrackedJob]:
        """Each job's expected final state and whether it ended so (``verdict``: "ok", "stuck", "lost" or
        "wrong")."""
        for job in self.jobs.values():
            job.expected, right = self.expectation(job)
            if job.missing:
                job.verdict = "lost"
            elif not job.final:
                job.verdict = "stuck"
            else:
                job.verdict = "ok" if right else "wrong"
        return list(self.jobs.values())

    def expectation(self, job: TrackedJob) -> tuple[str, bool]:
        """The rule for ``job`` (see the module's docstring), and whether its last answer meets it."""
        last = job.last or {}
        state, error, result = last.get("state"), last.get("error") or "", last.get("result")
        if job.purpose == UNRECORDED:
            return "any final state", state in FINAL
        interrupted = state == "interrupted" and INTERRUPTED_REASON in error
        if job.cancelled:
            if any(job.owner == kill.worker for kill in self.worker_kills):
                # Its worker was killed after the cancel: had the worker written the job's end by then, it is
                # cancelled; if not, the worker that replaced it wrote it, interrupted.
                return f"cancelled, or interrupted: {INTERRUPTED_REASON} (its worker was killed)", (
                    state == "cancelled" or interrupted
                )
            return "cancelled", state == "cancelled"
        if job.id in self.killed_jobs:
            return f"failed: {KILLED_REASON}", state == "failed" and KILLED_REASON in error
        held = [kill.held(job) for kill in self.worker_kills]
        if True in held:
            return f"interrupted: {INTERRUPTED_REASON}", interrupted
        expected, right = self.normal(job, state, result)
        if None in held:  # running when a worker was killed, on a worker the soak never saw
            return f"{expected}, or interrupted (it may have run on the killed worker)", right or interrupted
        return expected, right

    @staticmethod
    def normal(job: TrackedJob, state: Any, result: Any) -> tuple[str, bool]:
        """The final state of a job no fault touched."""
        if job.purpose == LONG_PREDICT:
            return "succeeded, every row predicted", state == "succeeded" and result == [0] * LONG_PREDICT_ROWS
        if job.purpose == TRAINING:
            served = isinstance(result, dict) and bool(result.get("served_version"))
            return "succeeded, its version served", state == "succeeded" and served
        return "succeeded", state == "succeeded"
