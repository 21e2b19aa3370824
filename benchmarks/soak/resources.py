"""The server's processes, read from Linux's ``/proc``: each one's role, and its resident memory, open file
descriptors and threads; the bound their growth must stay under.

A role is what a process is for, so that a process killed by a fault and replaced is compared with its
predecessor: the supervisor (the ``stevedore-server run`` process), multiprocessing's resource tracker, the
uvicorn workers (the supervisor's spawned children), each model's worker processes (``python -m
stevedore_server.worker``, their model named in their orders), and jobs (a worker's spawned children).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

SUPERVISOR = "supervisor"
TRACKER = "resource tracker"
WORKER = "uvicorn worker"
JOB = "job"


def model_worker(model: str) -> str:
    """The role of a model's worker processes."""
    return f"model worker ({model})"


def steady_counts(workers: int, model: str, processes: int) -> dict[str, int]:
    """How many processes of each role a settled server has (no job left running)."""
    return {SUPERVISOR: 1, TRACKER: 1, WORKER: workers, model_worker(model): workers * processes, JOB: 0}


@dataclass(frozen=True)
class Growth:
    """How much a role may grow from the start of a half to its middle and end (each a stated bound)."""

    rss_fraction: float = 0.25
    rss_floor_mib: float = 50.0
    fds: int = 20
    threads: int = 20

    def describe(self) -> str:
        return (
            f"RSS at most +{self.rss_fraction:.0%} or +{self.rss_floor_mib:g} MiB (the larger), open fds at most "
            f"+{self.fds}, threads at most +{self.threads}, over the start, for the largest process of each role"
        )

    def rss_limit(self, start_mib: float) -> float:
        return start_mib + max(start_mib * self.rss_fraction, self.rss_floor_mib)


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str
    rss_mib: float
    fds: int
    threads: int


@dataclass(frozen=True)
class Snapshot:
    """Every process of the server's tree at one moment (``stage``: start, middle or end)."""

    stage: str
    processes: tuple[ProcessSample, ...]

    def of(self, role: str) -> list[ProcessSample]:
        return [sample for sample in self.processes if sample.role == role]

    def roles(self) -> list[str]:
        return sorted({sample.role for sample in self.processes})

    def largest(self, role: str) -> tuple[float, int, int] | None:
        """The largest RSS, fds and threads among the role's processes (each its own maximum)."""
        samples = self.of(role)
        if not samples:
            return None
        return max(s.rss_mib for s in samples), max(s.fds for s in samples), max(s.threads for s in samples)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), empty once it is gone."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        return []
    return found


def descendants(root: int) -> Iterator[tuple[int, int]]:
    """(pid, parent) of every living process under ``root``, root first (its parent given as 0)."""
    todo = [(root, 0)]
    while todo:
        pid, parent = todo.pop(0)
        yield pid, parent
        todo += [(child, pid) for child in children(pid)]


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def worker_model(pid: int) -> str | None:
    """The model a ``stevedore_server.worker`` process serves, read from its orders in its environment."""
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    found = re.search(rb"STEVEDORE_WORKER=(\{[^\x00]*\})", environment)
    if found is None:
        return None
    try:
        orders = json.loads(found.group(1))
    except ValueError:
        return None
    model = orders.get("model")
    return str(model) if orders.get("mode") != "job" and model else None


def role_of(pid: int, parent_role: str | None) -> str:
    """What the process is for, knowing its parent's role (see the module's docstring)."""
    if parent_role is None:
        return SUPERVISOR
    argv = " ".join(command_line(pid))
    if "multiprocessing.resource_tracker" in argv:
        return TRACKER
    if parent_role == SUPERVISOR and "multiprocessing.spawn" in argv:
        return WORKER
    model = worker_model(pid) if "stevedore_server.worker" in argv else None
    if model is not None:
        return model_worker(model)
    if parent_role in (WORKER, JOB):  # a job's process (however it is started), or what it started
        return JOB
    return f"other ({argv[:60]})"


def state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def measure(pid: int, role: str) -> ProcessSample | None:
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError, ValueError):
        return None  # it exited meanwhile
    return ProcessSample(pid, role, round(resident * PAGE_BYTES / MIB, 1), fds, threads)


def server_roles(root: int) -> dict[int, str]:
    """The role of every living process of the server's tree, by pid."""
    roles: dict[int, str] = {}
    for pid, parent in descendants(root):
        if alive(pid):
            roles[pid] = role_of(pid, None if pid == root else roles.get(parent, "gone"))
    return roles


def snapshot(root: int, stage: str) -> Snapshot:
    samples = [measure(pid, role) for pid, role in server_roles(root).items()]
    return Snapshot(stage, tuple(sample for sample in samples if sample is not None))


def pids_with_role(root: int, role: str) -> list[int]:
    return sorted(pid for pid, found in server_roles(root).items() if found == role)


def over_bound(start: Snapshot, later: Snapshot, growth: Growth, roles: Iterable[str]) -> list[str]:
    """Each way a role of ``later`` grew past ``growth`` from ``start``, in words."""
    problems = []
    for role in roles:
        first, then = start.largest(role), later.largest(role)
        if first is None or then is None:
            continue
        (rss, fds, threads), (rss_now, fds_now, threads_now) = first, then
        if rss_now > growth.rss_limit(rss):
            problems.append(f"{role}: RSS {rss:.1f} -> {rss_now:.1f} MiB at the {later.stage}")
        if fds_now > fds + growth.fds:
            problems.append(f"{role}: open fds {fds} -> {fds_now} at the {later.stage}")
        if threads_now > threads + growth.threads:
            problems.append(f"{role}: threads {threads} -> {threads_now} at the {later.stage}")
    return problems


def wrong_counts(found: Snapshot, expected: dict[str, int]) -> list[str]:
    """Each steady role whose number of processes is not what the settings give."""
    return [
        f"{role}: {len(found.of(role))} processes at the {found.stage}, {count} expected"
        for role, count in expected.items()
        if len(found.of(role)) != count
    ]
