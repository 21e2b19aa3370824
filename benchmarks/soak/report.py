"""The soak's report: requests by route and outcome, failures by cause (or unexplained), every job's final state
against its rule, each process role's resources at the start, middle and end of each half against the bound,
each fault's evidence, and the throughput and latency of the inferences over time."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .faults import FaultRecord
from .jobs import TrackedJob
from .records import INFERENCE, Request
from .resources import Growth, Snapshot, over_bound, wrong_counts
from .rules import Rule, cause


@dataclass
class HalfResult:
    name: str
    database: str
    #: ``time.monotonic()`` when its load started, its planned length, and when its load stopped.
    origin: float
    planned: float
    ended: float
    snapshots: list[Snapshot]
    faults: list[FaultRecord]
    rules: list[Rule]
    jobs: list[TrackedJob]
    #: The message and traceback its server logged under each error id.
    tracebacks: dict[str, str]
    exit_code: int | None
    #: Processes of its server still alive after it stopped.
    leftovers: list[int]
    log_path: Path
    #: Its server's warnings, errors and stray lines, by message (``SoakServer.notable``).
    notable: Counter[str]

    def stage(self, name: str) -> Snapshot | None:
        return next((snapshot for snapshot in self.snapshots if snapshot.stage == name), None)


@dataclass
class SoakReport:
    duration: float
    halves: list[HalfResult]
    requests: list[Request]
    growth: Growth
    steady: dict[str, int]
    causes: dict[int, str | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for index, request in enumerate(self.requests):
            if not request.outcome.ok:
                half = self.half(request.half)
                self.causes[index] = cause(request, half.rules, half.tracebacks, half.origin)

    def half(self, name: str) -> HalfResult:
        return next(half for half in self.halves if half.name == name)

    # -- the verdicts -------------------------------------------------------------------------------------

    @cached_property
    def unexplained(self) -> list[Request]:
        return [self.requests[index] for index, found in self.causes.items() if found is None]

    def jobs_with(self, verdict: str) -> list[TrackedJob]:
        return [job for half in self.halves for job in half.jobs if job.verdict == verdict]

    @property
    def over_bound(self) -> list[str]:
        """Each role's growth past the bound, from the start of its half to the middle and to the end."""
        roles = sorted(role for role, count in self.steady.items() if count)  # jobs come and go
        problems = []
        for half in self.halves:
            start = half.stage("start")
            for later in (half.stage("middle"), half.stage("end")):
                if start is not None and later is not None:
                    problems += [f"{half.name}: {problem}" for problem in over_bound(start, later, self.growth, roles)]
        return problems

    @property
    def wrong_counts(self) -> list[str]:
        """Each role whose number of processes at the end of its half is not the settings' (a killed process
        not replaced, a job's process left)."""
        return [
            f"{half.name}: {problem}"
            for half in self.halves
            if (end := half.stage("end")) is not None
            for problem in wrong_counts(end, self.steady)
        ]

    @property
    def faults_missed(self) -> list[FaultRecord]:
        return [fault for half in self.halves for fault in half.faults if not fault.happened]

    @property
    def problems(self) -> list[str]:
        """Everything that fails the soak, in words (empty: it passed)."""
        found = [f"unexplained: {describe(request, self.half(request.half).origin)}" for request in self.unexplained]
        found += [f"job {job.verdict}: {job.id} ({job.purpose}, {job.half}) is {job.state}, expected {job.expected}"
                  for verdict in ("lost", "stuck", "wrong") for job in self.jobs_with(verdict)]  # fmt: skip
        found += [f"over the bound: {problem}" for problem in self.over_bound]
        found += [f"processes: {problem}" for problem in self.wrong_counts]
        found += [f"fault not struck: {fault.name} ({fault.half}): {'; '.join(fault.evidence)}"
                  for fault in self.faults_missed]  # fmt: skip
        for half in self.halves:
            if half.exit_code != 0:
                found.append(f"{half.name}: the server exited with {half.exit_code} when stopped (0 expected)")
            if half.leftovers:
                found.append(f"{half.name}: processes left after the server stopped: {half.leftovers}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    # -- the text -------------------------------------------------------------------------------------------

    def text(self, bucket: float | None = None) -> str:
        sections = [
            self.summary(),
            self.by_route(),
            self.by_cause(),
            self.jobs_table(),
            self.resources_table(),
            self.faults_table(),
            self.log_table(),
            self.timeline(bucket or (60.0 if self.duration >= 300 else 10.0)),
        ]
        return "\n\n".join(sections)

    def summary(self) -> str:
        verdict = "PASSED" if self.ok else "FAILED"
        halves = ", ".join(
            f"{half.name} ({half.database}) {half.ended - half.origin:.0f} s of load, planned {half.planned:.0f} s, "
            f"server log {half.log_path}"
            for half in self.halves
        )
        lines = [f"soak of {self.duration:g} s: {verdict}", f"halves: {halves}", *self.problems]
        return "\n".join(lines)

    def by_route(self) -> str:
        counts: Counter[tuple[str, str]] = Counter((r.route, r.outcome.label) for r in self.requests)
        routes = sorted({route for route, _ in counts})
        lines = ["requests by route and outcome"]
        for route in routes:
            outcomes = ", ".join(
                f"{label} {count}" for (found, label), count in sorted(counts.items()) if found == route
            )
            lines.append(f"  {route:<48} {outcomes}")
        return "\n".join(lines)

    def by_cause(self) -> str:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for index, found in self.causes.items():
            request = self.requests[index]
            counts[found or "UNEXPLAINED"][f"{request.route}: {request.outcome.label}"] += 1
        lines = ["errors by cause (each expected by the rule stated)" if counts else "errors by cause: none"]
        for found, by_route in sorted(counts.items(), key=lambda item: item[0] != "UNEXPLAINED"):
            lines.append(f"  {sum(by_route.values()):>5}  {found}")
            lines += [f"           {count} x {what}" for what, count in sorted(by_route.items())]
        return "\n".join(lines)

    def jobs_table(self) -> str:
        lines = ["jobs: final state against expected"]
        for half in self.halves:
            for job in half.jobs:
                mark = "ok" if job.verdict == "ok" else job.verdict.upper()
                lines.append(f"  {mark:<6} {half.name:<10} {job.id[:8]}  {job.purpose:<22} {job.state:<12} "
                             f"expected {job.expected}")  # fmt: skip
        return "\n".join(lines)

    def resources_table(self) -> str:
        lines = [f"resources per process (bound: {self.growth.describe()})",
                 row(("half", "role", "stage", "pid", "RSS MiB", "fds", "threads"), RESOURCE_COLUMNS)]  # fmt: skip
        for half in self.halves:
            roles = sorted({role for snapshot in half.snapshots for role in snapshot.roles()})
            for role in roles:
                for snapshot in half.snapshots:
                    lines += [
                        row((half.name, role, snapshot.stage, s.pid, f"{s.rss_mib:.1f}", s.fds, s.threads),
                            RESOURCE_COLUMNS)
                        for s in snapshot.of(role)
                    ]  # fmt: skip
        return "\n".join(lines)

    def faults_table(self) -> str:
        lines = ["faults (t: seconds from the start of the half's load)"]
        for half in self.halves:
            for fault in half.faults:
                mark = "struck" if fault.happened else "MISSED"
                lines.append(f"  {mark:<7} {half.name:<10} t={fault.at - half.origin:6.1f} s  {fault.name}")
                lines += [f"           {line}" for line in fault.evidence]
        return "\n".join(lines)

    def log_table(self) -> str:
        """What the servers logged above info (for a reader: the failures above are judged by the rules)."""
        lines = ["the servers' warnings, errors and stray lines (ids and numbers as N)"]
        for half in self.halves:
            lines += [f"  {half.name:<10} {count:>5} x {message}" for message, count in half.notable.most_common(15)]
            if len(half.notable) > 15:
                lines.append(f"  {half.name:<10} ... and {len(half.notable) - 15} more kinds: see {half.log_path}")
        return "\n".join(lines)

    def timeline(self, bucket: float) -> str:
        """Unary inferences (REST, V2, gRPC) by ``bucket`` seconds of each half's load: throughput, p50, p99."""
        title = f"inferences by {bucket:g} s of load (REST, V2 and gRPC predicts; streams, jobs and faults apart)"
        lines = [title, row(("half", "from s", "requests", "failed", "req/s", "p50 ms", "p99 ms"), TIMELINE_COLUMNS)]
        for half in self.halves:
            buckets: dict[int, list[Request]] = defaultdict(list)
            for request in self.requests:
                if request.half == half.name and request.kind == INFERENCE:
                    buckets[int((request.started - half.origin) // bucket)].append(request)
            for index, found in sorted(buckets.items()):
                span = max(1e-9, min(bucket, half.ended - half.origin - index * bucket))
                latencies = sorted(r.latency * 1000 for r in found)
                failures = sum(not r.outcome.ok for r in found)
                cells = (half.name, f"{index * bucket:.0f}", len(found), failures, f"{len(found) / span:.1f}",
                         f"{statistics.median(latencies):.1f}", f"{percentile(latencies, 99):.1f}")  # fmt: skip
                lines.append(row(cells, TIMELINE_COLUMNS))
        return "\n".join(lines)


#: Column widths of the tables (negative: aligned left).
RESOURCE_COLUMNS = (-10, -26, -7, 7, 9, 5, 7)
TIMELINE_COLUMNS = (-10, 7, 9, 7, 7, 8, 8)


def row(cells: tuple[object, ...], widths: tuple[int, ...]) -> str:
    """A table's line: each cell in its column's width, numbers to the right."""
    return "  " + " ".join(
        f"{cell!s:<{-width}}" if width < 0 else f"{cell!s:>{width}}" for cell, width in zip(cells, widths, strict=True)
    )


def percentile(ordered: list[float], rank: int) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, -(-rank * len(ordered) // 100) - 1))]


def describe(request: Request, origin: float) -> str:
    outcome = request.outcome
    detail = f": {outcome.detail[:200]}" if outcome.detail else ""
    return f"{request.route} ({request.half}) at t={request.started - origin:.1f} s: {outcome.label}{detail}"
