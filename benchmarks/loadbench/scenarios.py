"""The load scenarios: which request, how many wrk threads and connections."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    #: "small" (1 row) or "batch" (1000 rows)
    size: str
    threads: int
    connections: int
    #: Targets with adaptive batching of their own run it with batching on; the others run it as they are.
    batching: bool = False


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("small-c1", "small", threads=1, connections=1),
        Scenario("small-c32", "small", threads=2, connections=32),
        Scenario("batch1000-c4", "batch", threads=1, connections=4),
        Scenario("small-c64-batching", "small", threads=2, connections=64, batching=True),
    )
}
ROWS = {"small": 1, "batch": 1000}
