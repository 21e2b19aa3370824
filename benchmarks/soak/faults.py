"""The faults, each struck while the load runs: what it does, the rule that explains the failures it may cause,
and the evidence that it really happened (``FaultRecord.happened``: checked by the soak's test, one a fault).

- ``kill_worker``: SIGKILL to the uvicorn worker running a hanging job; the supervisor starts another, which
  finds the job left running and interrupts it.
- ``kill_model_process``: SIGKILL to a ``spin`` worker process in the middle of a long call; the call gets a 500
  naming it, and the pool starts another.
- ``kill_job``: SIGKILL to a hanging job's process; the job ends failed.
- ``database_outage``: PostgreSQL stopped for some seconds while a job runs, then started again; the job is
  cancelled then.
- ``stall``: clients that send half a request (half the body; half the headers) and stall; one then finishes
  it, the others leave.
- ``burst``: many requests at once to a model of one thread and a short queue.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import resources
from .clients import http_client, sleeper, spin_predict, stalled
from .jobs import KILLED, THROUGH_OUTAGE, WORKER_VICTIM, JobTracker, TrackedJob, WorkerKill
from .postgres import Postgres
from .records import FAULT, Outcome, Recorder
from .rules import BurstOverflow, DatabaseDown, ModelProcessKilled, Rule, WorkerKilled, names_killed
from .server import PROCESS_MODEL, PROCESSES, START_DEADLINE, WORKERS, SoakServer

#: Seconds a hanging job gets to be running (its process spawned, the model unpickled) before a fault gives up.
JOB_START_DEADLINE = 60.0
#: Iterations of ``spin``'s loop in the long call (several seconds): it is still running when its process dies.
LONG_SPIN = 100_000_000
#: CPU seconds a ``spin`` process must use in a second to be the one running the long call: the load's calls use
#: a hundredth of that; a process starved by a busy machine (a worker starting beside it) still gets this much.
BUSY_CPU = 0.15
#: Seconds a model's worker process gets to be replaced, and a killed process to be gone.
REPLACE_DEADLINE = 60.0
#: Seconds a line logged on a worker's event loop may take to reach the log (it is written at the loop's next turn).
LOG_DEADLINE = 10.0
BURST_SIZE = 16
BURST_SECONDS = 0.5
#: The faults' names, as the report and the test know them.
WORKER_KILL, MODEL_PROCESS_KILL, JOB_KILL = (
    "uvicorn worker SIGKILL",
    "model worker process SIGKILL",
    "job process SIGKILL",
)
DATABASE_OUTAGE, STALL, BURST = "PostgreSQL stopped", "half requests stalled", "burst past the queue"


@dataclass
class FaultRecord:
    """One fault struck: what it was, when, what was seen (``evidence`` in words, ``facts`` by name: the pids
    killed and their replacements, what the clients got), and whether all its evidence is there."""

    name: str
    half: str
    #: ``time.monotonic()`` when it struck.
    at: float
    evidence: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    happened: bool = False


@dataclass
class FaultContext:
    """What the faults of one half act on and report to."""

    half: str
    server: SoakServer
    recorder: Recorder
    jobs: JobTracker
    postgres: Postgres | None
    faults: list[FaultRecord] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    #: Faults still being watched (a replacement starting, a stalled client waiting).
    background: list[threading.Thread] = field(default_factory=list)

    def record(self, name: str) -> FaultRecord:
        fault = FaultRecord(name, self.half, time.monotonic())
        self.faults.append(fault)
        return fault

    def watch(self, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.background.append(thread)

    def wait_background(self, deadline: float) -> None:
        stop_at = time.monotonic() + deadline
        for thread in self.background:
            thread.join(max(0.0, stop_at - time.monotonic()))


def wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def running_hanging_job(context: FaultContext, purpose: str, fault: FaultRecord) -> TrackedJob | None:
    """A hanging job, running; None (and the job cancelled) if it never ran in time."""
    job = context.jobs.hanging(purpose)
    if job is not None and context.jobs.wait_hanging(job, JOB_START_DEADLINE) and job.pid:
        return job
    fault.evidence.append(f"its hanging job never ran within {JOB_START_DEADLINE:g} s: not struck")
    if job is not None:
        context.jobs.cancel(job)
    return None


def kill_worker(context: FaultContext) -> None:
    fault = context.record(WORKER_KILL)
    job = running_hanging_job(context, WORKER_VICTIM, fault)
    if job is None or job.pid is None:
        return
    owner = resources.parent_of(job.pid)
    workers = resources.pids_with_role(context.server.pid, resources.WORKER)
    if owner not in workers:
        fault.evidence.append(f"job {job.id}'s process {job.pid} is no worker's child (parent {owner})")
        context.jobs.cancel(job)
        return
    children = {worker: resources.children(worker) for worker in workers}
    startups = context.server.startups()
    wall, fault.at = time.time(), time.monotonic()
    os.kill(owner, signal.SIGKILL)
    context.jobs.worker_kills.append(WorkerKill(wall, owner, children))
    context.rules.append(WorkerKilled(fault.at, owner))
    fault.facts.update(killed=owner, job=job.id)
    fault.evidence.append(f"killed worker {owner}, running job {job.id[:8]} (process {job.pid})")

    def replaced() -> bool:
        now = resources.pids_with_role(context.server.pid, resources.WORKER)
        return owner not in now and len(now) == WORKERS and context.server.startups() > startups

    def watch() -> None:
        if wait_for(replaced, START_DEADLINE):
            new = set(resources.pids_with_role(context.server.pid, resources.WORKER)) - set(workers)
            fault.evidence.append(f"replaced by worker {sorted(new)}, started {time.monotonic() - fault.at:.1f} s on")
            fault.facts["replacement"] = min(new)
            fault.happened = True
        else:
            fault.evidence.append(f"no replacement started within {START_DEADLINE:g} s")

    context.watch(watch)


def busiest(pids: list[int]) -> tuple[int, float]:
    """The process that used the most CPU in the next second, and how much (0, 0.0 for no process)."""
    before = {pid: resources.cpu_seconds(pid) for pid in pids}
    time.sleep(1.0)
    used = {pid: resources.cpu_seconds(pid) - before[pid] for pid in pids}
    return max(used.items(), key=lambda item: item[1], default=(0, 0.0))


def settle(context: FaultContext, role: str) -> None:
    """Wait until every worker has its model processes and none of them is busy: a process still starting (a
    replaced worker's, loading its model) uses as much CPU as the long call's, and would be taken for it."""
    give_up = time.monotonic() + REPLACE_DEADLINE
    while time.monotonic() < give_up:
        pids = resources.pids_with_role(context.server.pid, role)
        if len(pids) == WORKERS * PROCESSES and busiest(pids)[1] < BUSY_CPU:
            return


def kill_model_process(context: FaultContext) -> None:
    fault = context.record(MODEL_PROCESS_KILL)
    role = resources.model_worker(PROCESS_MODEL)
    answer: list[Outcome] = []

    def long_call() -> None:
        with http_client(context.server.url) as client:
            answer.append(context.recorder.call("fault: long spin call", FAULT,
                                                lambda: spin_predict(client, [LONG_SPIN], timeout=60)))  # fmt: skip

    settle(context, role)
    caller = threading.Thread(target=long_call, daemon=True)
    caller.start()
    stop_at, victim, used = time.monotonic() + 15, 0, 0.0
    while time.monotonic() < stop_at and used < BUSY_CPU and caller.is_alive():
        victim, used = busiest(resources.pids_with_role(context.server.pid, role))
    if used < BUSY_CPU or not victim:
        fault.evidence.append("no spin process ran the long call: not struck")
        caller.join(60)
        return
    parent = resources.parent_of(victim)
    before = resources.pids_with_role(context.server.pid, role)
    fault.at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    context.rules.append(ModelProcessKilled(fault.at, victim, PROCESS_MODEL))
    fault.facts.update(killed=victim, worker=parent)
    fault.evidence.append(f"killed {PROCESS_MODEL} process {victim} (of worker {parent}) running the long call")
    caller.join(60)
    failure = answer[0] if answer else Outcome("no answer")
    fault.facts["long call"] = failure.label
    named = failure.label == "HTTP 500" and wait_for(
        lambda: names_killed(context.server.tracebacks().get(failure.error_id or "", ""), victim), LOG_DEADLINE
    )
    fault.evidence.append(f"the long call got {failure.label}, {'its error id logged' if named else 'not logged'} "
                          "as the process killed")  # fmt: skip

    def siblings() -> set[int]:
        """The model's processes of the killed one's uvicorn worker."""
        return {pid for pid in resources.pids_with_role(context.server.pid, role) if resources.parent_of(pid) == parent}

    if wait_for(lambda: not resources.alive(victim) and len(siblings()) == PROCESSES, REPLACE_DEADLINE):
        fault.facts["replacement"] = min(siblings() - set(before))
        fault.evidence.append(f"its worker has two spin processes again (new: {fault.facts['replacement']})")
        fault.happened = named
    else:
        fault.evidence.append(f"not replaced within {REPLACE_DEADLINE:g} s")


def kill_job(context: FaultContext) -> None:
    fault = context.record(JOB_KILL)
    job = running_hanging_job(context, KILLED, fault)
    if job is None or job.pid is None:
        return
    pid = job.pid
    context.jobs.killed_jobs.add(job.id)
    fault.at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    gone = wait_for(lambda: not resources.alive(pid), REPLACE_DEADLINE)
    fault.evidence.append(f"killed job {job.id[:8]}'s process {pid}: {'gone' if gone else 'still there'}")
    fault.facts.update(killed=pid, job=job.id, gone=gone)
    fault.happened = gone


def database_outage(context: FaultContext, seconds: float) -> None:
    """PostgreSQL stopped for ``seconds``. After any worker replacement has finished: a starting worker opens the
    database, and a worker that cannot start is another fault, not this one."""
    if context.postgres is None:
        return
    context.wait_background(START_DEADLINE)
    fault = context.record(DATABASE_OUTAGE)
    job = running_hanging_job(context, THROUGH_OUTAGE, fault)  # the outage must find a job running
    fault.at = down = time.monotonic()  # before the stop: a fast stop ends the sessions as it begins
    context.postgres.stop()
    seen_down = not context.postgres.answers()
    time.sleep(seconds)
    context.postgres.start()
    up = time.monotonic()
    seen_up = context.postgres.answers()
    context.rules.append(DatabaseDown(down, up))
    after_stop, after_start = "no answer" if seen_down else "answered", "answered" if seen_up else "no answer"
    fault.evidence.append(
        f"pg_isready: {after_stop} after the stop, {after_start} after the start {up - down:.1f} s on"
    )
    fault.facts.update(down=seen_down, up=seen_up, seconds=up - down, job=job.id if job else None)
    if job is not None:
        context.jobs.cancel(job)
        fault.evidence.append(f"job {job.id[:8]} ran through it, then was cancelled")
    fault.happened = seen_down and seen_up and job is not None


def stall(context: FaultContext, seconds: float) -> None:
    """Three stalled clients at once: half the body then the rest, half the body then gone, half the headers
    then gone. The server must keep answering the others meanwhile."""
    fault = context.record(STALL)
    url, recorder = context.server.url, context.recorder
    request_line = len(b"POST /models/iris/predict HTTP/1.1\r\n")
    clients = {  # cut 10 bytes before the end of the body, or 10 bytes into the headers
        "half request, finished": lambda: stalled(url, -10, seconds, finish=True),
        "half request, abandoned": lambda: stalled(url, -10, seconds, finish=False),
        "half headers, abandoned": lambda: stalled(url, request_line + 10, seconds, finish=False),
    }

    def watch() -> None:
        threads = [threading.Thread(target=recorder.call, args=(route, FAULT, send), daemon=True)
                   for route, send in clients.items()]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
        mine = [r for r in recorder.of_half(context.half) if r.route in clients and r.started >= fault.at]
        others = [r for r in recorder.of_half(context.half)
                  if r.kind != FAULT and fault.at <= r.started and r.ended <= fault.at + seconds]  # fmt: skip
        served = sum(r.outcome.ok for r in others)
        fault.evidence += [
            f"{r.route}: {r.outcome.label} after {r.latency:.1f} s (stalled {seconds:g} s)" for r in mine
        ]
        fault.evidence.append(f"{served} of {len(others)} other requests answered right meanwhile")
        fault.facts.update({r.route: r.outcome.label for r in mine}, seconds=seconds, others=served)
        fault.happened = len(mine) == len(clients) and all(r.outcome.ok for r in mine) and served > 0

    context.watch(watch)


def burst(context: FaultContext) -> None:
    fault = context.record(BURST)
    route = "burst: sleeper"
    context.rules.append(BurstOverflow(route, "sleeper", fault.at))
    barrier = threading.Barrier(BURST_SIZE)

    def send() -> None:
        with http_client(context.server.url) as client:
            barrier.wait()
            context.recorder.call(route, FAULT, lambda: sleeper(client, BURST_SECONDS))

    threads = [threading.Thread(target=send, daemon=True) for _ in range(BURST_SIZE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sent = [r for r in context.recorder.of_half(context.half) if r.route == route and r.started >= fault.at]
    refused, served = sum(r.outcome.label == "HTTP 503" for r in sent), sum(r.outcome.ok for r in sent)
    fault.evidence.append(f"{served} answered, {refused} refused with 503, of {len(sent)}")
    fault.facts.update(served=served, refused=refused)
    fault.happened = refused > 0 and served > 0
