"""The soak's run: the environment built once, then two halves (SQLite, then PostgreSQL), each a server of its
own under the mixed load with its faults on a schedule, then the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.venvs import Venv

from . import resources
from .faults import (
    FaultContext,
    burst,
    database_outage,
    kill_job,
    kill_model_process,
    kill_worker,
    stall,
    wait_for,
)
from .jobs import JobTracker
from .load import Load, Pace
from .postgres import Postgres
from .records import Recorder
from .report import HalfResult, SoakReport
from .server import PROCESS_MODEL, PROCESSES, START_DEADLINE, WORKERS, SoakServer, soak_venv

logger = logging.getLogger("soak")

#: Seconds of load each cycle of faults takes, about: a 10-minute soak strikes each fault three times a half.
CYCLE = 100.0
#: Seconds the jobs get to end after the load stops (a long prediction takes seconds; a stopped job its grace).
JOBS_DEADLINE = 120.0
#: Seconds the server gets to be back to its steady processes after the load (replacements started, jobs gone).
SETTLE_DEADLINE = 60.0
#: Seconds the server's processes get to be gone once it has exited.
EXIT_DEADLINE = 10.0
GROWTH = resources.Growth()


@dataclass(frozen=True)
class Plan:
    """The schedule of one half, from its length."""

    half: float
    outage: float = 10.0

    @property
    def warmup(self) -> float:
        """Seconds of load before the first resources are read and the first fault strikes."""
        return min(10.0, self.half / 10)

    @property
    def cycles(self) -> int:
        return max(1, round(self.half / CYCLE))

    @property
    def cycle(self) -> float:
        return (self.half - self.warmup) / self.cycles

    @property
    def stall(self) -> float:
        return max(5.0, self.cycle / 5)

    @property
    def pace(self) -> Pace:
        return Pace(job_interval=max(4.0, self.cycle / 10), training_interval=self.cycle,
                    repository_interval=self.cycle / 3)  # fmt: skip

    def events(self, postgres: bool) -> list[tuple[float, str]]:
        """(seconds from the load's start, what) in order: each cycle's faults, and the middle reading."""
        offsets = [(0.0, "database outage")] if postgres else []
        offsets += [(0.0, "kill worker"), (0.3, "stall"), (0.4, "burst"), (0.5, "kill job"),
                    (0.65, "kill model process")]  # fmt: skip
        events = [(self.warmup + (k + share) * self.cycle, name) for k in range(self.cycles) for share, name in offsets]
        return sorted([*events, (self.half / 2, "middle")], key=lambda event: event[0])


class Half:
    """One half: its server, load, faults and readings."""

    def __init__(self, name: str, plan: Plan, environment: Venv, directory: Path, recorder: Recorder,
                 postgres: Postgres | None) -> None:  # fmt: skip
        self.name, self.plan, self.recorder, self.postgres = name, plan, recorder, postgres
        self.environment = environment
        extra = {"STEVEDORE_STATE_DIR": str(directory / "state")}
        if postgres is not None:  # the variable keeps the URL off the command line
            extra["STEVEDORE_DATABASE_URL"] = postgres.database("soak")
        self.server = SoakServer.start(environment, directory, **extra)
        self.snapshots: list[resources.Snapshot] = []

    def run(self) -> HalfResult:
        recorder, server = self.recorder, self.server
        recorder.half = self.name
        try:
            server.wait_started(WORKERS)
            jobs = JobTracker(server.url, server.pid, recorder, self.name)
            context = FaultContext(self.name, server, recorder, jobs, self.postgres)
            load = Load(server.url, server.grpc_target, recorder, jobs, self.plan.pace)
            origin = time.monotonic()
            load.start()
            try:
                self.strike(context, origin)
            finally:
                load.stop()
            ended = time.monotonic()
            jobs.settle(JOBS_DEADLINE)
            self.settle()
            self.snapshots.append(resources.snapshot(server.pid, "end"))
            tracebacks, notable = server.tracebacks(), server.notable()
        finally:
            seen = {sample.pid for snapshot in self.snapshots for sample in snapshot.processes}
            exit_code = server.stop()
        seen |= {job.pid for job in jobs.jobs.values() if job.pid}
        # The resource tracker ends once the last process holding its pipe has: a moment after the supervisor.
        wait_for(lambda: not any(resources.alive(pid) and self.ours(pid) for pid in seen), EXIT_DEADLINE)
        leftovers = sorted(pid for pid in seen if resources.alive(pid) and self.ours(pid))
        return HalfResult(
            self.name, "PostgreSQL" if self.postgres else "SQLite", origin, self.plan.half, ended, self.snapshots,
            context.faults, context.rules, jobs.judge(), tracebacks, exit_code, leftovers, server.log_path, notable,
        )  # fmt: skip

    def strike(self, context: FaultContext, origin: float) -> None:
        """Each event at its time (or once the one before it is done), then the load to the end of the half."""
        actions: dict[str, Callable[[], None]] = {
            "database outage": lambda: database_outage(context, self.plan.outage),
            "kill worker": lambda: kill_worker(context),
            "stall": lambda: stall(context, self.plan.stall),
            "burst": lambda: burst(context),
            "kill job": lambda: kill_job(context),
            "kill model process": lambda: kill_model_process(context),
            "middle": lambda: self.snapshots.append(resources.snapshot(self.server.pid, "middle")),
        }
        self.wait_until(origin + self.plan.warmup)
        self.snapshots.append(resources.snapshot(self.server.pid, "start"))
        for offset, name in self.plan.events(self.postgres is not None):
            self.wait_until(origin + offset)
            logger.info("%s half, t=%.0f s: %s", self.name, time.monotonic() - origin, name)
            actions[name]()
        self.wait_until(origin + self.plan.half)
        context.wait_background(START_DEADLINE + 60)

    def ours(self, pid: int) -> bool:
        """Whether the process runs our environment's Python (not another given a number we saw)."""
        return str(self.environment.path) in " ".join(resources.command_line(pid))

    @staticmethod
    def wait_until(moment: float) -> None:
        time.sleep(max(0.0, moment - time.monotonic()))

    def settle(self) -> None:
        """Wait until the server has its steady processes again (or the deadline), before the last reading."""
        expected = resources.steady_counts(WORKERS, PROCESS_MODEL, PROCESSES)
        stop_at = time.monotonic() + SETTLE_DEADLINE
        while time.monotonic() < stop_at:
            if not resources.wrong_counts(resources.snapshot(self.server.pid, "end"), expected):
                return
            time.sleep(0.5)


def run_soak(duration: float, directory: Path, wheelhouse: Path | None = None, outage: float = 10.0) -> SoakReport:
    """Soak a real server for ``duration`` seconds of load (two halves: SQLite, then PostgreSQL), its files
    (environment, servers' logs) in ``directory``; the report. ``wheelhouse``: wheels of the core, the example
    plugin and their dependencies (built here if not given)."""
    directory.mkdir(parents=True, exist_ok=True)
    postgres = Postgres()  # first: a machine without PostgreSQL fails before the environment is built
    logger.info("building the server's environment in %s", directory / "environment")
    environment = soak_venv(directory / "environment", wheelhouse)
    recorder = Recorder()
    plan = Plan(duration / 2, outage)
    results = []
    try:
        for name, database in (("sqlite", None), ("postgresql", postgres)):
            if database is not None:
                database.create()
            logger.info("%s half: %.0f s of load", name, plan.half)
            results.append(Half(name, plan, environment, directory / name, recorder, database).run())
    finally:
        postgres.destroy()
    return SoakReport(duration, results, recorder.requests, GROWTH,
                      resources.steady_counts(WORKERS, PROCESS_MODEL, PROCESSES))  # fmt: skip
