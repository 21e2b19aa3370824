"""Workers converging on one set of traffic splits: ``PUT /traffic/NAME`` with ``--workers N``.

As the repository's models do (``convergence``): the worker that got the
request, under the workers' file lock, applies the new split to its own router
and records it in the shared ``traffic.json`` (a generation number, and for
each name its split, the generation that set it, and the split of the settings
file it replaced); every worker polls that file, applies what changed and
acknowledges the generation (``trafficack-WORKER``); the request is answered
once every live worker has. A worker that starts, or restarts (``SIGHUP``
restarts each in turn, reading the settings file again), applies the recorded
splits before it serves, except those whose file split has changed since they
were recorded: the file read again wins over a change made before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from anyio import to_thread

from stevedore_server.base.errors import InferenceTimeout
from stevedore_server.base.settings.traffic import Variant, split_of

from .convergence import SharedState
from .traffic import Route, TrafficRouter

logger = logging.getLogger("stevedore.traffic")

FILE = "traffic.json"
ACK = "trafficack"
#: Seconds between a worker's looks at the recorded splits, and the longest wait for every worker to follow.
POLL_INTERVAL = 0.1
CONVERGE_TIMEOUT = 60.0


class SharedSplits:
    """The splits every worker of a run follows (see the module's docstring)."""

    def __init__(self, router: TrafficRouter, shared: SharedState, workers: int) -> None:
        self.router = router
        self.shared = shared
        self.workers = workers
        self.path = shared.directory / FILE
        self.ack_path = shared.directory / f"{ACK}-{shared.worker}"
        #: The split each name had in the settings file: a recorded change applies only while it is the same.
        self.from_file = {name: route.traffic.split for name, route in router.entries.items()}
        self.generation = 0
        self.applied: dict[str, int] = {}
        self.poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Apply the recorded splits before serving, then follow them; route this router's changes here."""
        self.follow()
        self.router.changer = self.change
        self.poller = asyncio.create_task(self.poll())

    async def change(self, name: str, split: tuple[Variant, ...]) -> Route:
        """Apply ``split`` here, record it, and wait until every live worker has applied it."""
        lock = self.shared.locked()
        await to_thread.run_sync(lock.__enter__)
        try:
            recorded = self.read()
            self.catch_up(recorded)
            route = self.router.set_split(name, split)
            generation = recorded["generation"] + 1
            over = [variant.as_table() for variant in self.from_file.get(name, ())]
            recorded["generation"] = generation
            recorded["splits"][name] = {"split": [v.as_table() for v in split], "over": over, "at": generation}
            self.write(recorded)
            self.generation = self.applied[name] = generation
            self.ack_path.write_text(str(generation))
        finally:
            lock.__exit__(None, None, None)
        await self.converged(name, generation)
        return route

    async def converged(self, name: str, generation: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONVERGE_TIMEOUT
        while sum(acked >= generation for acked in self.shared.of_live_workers(ACK)) < self.workers:
            if loop.time() > deadline:
                late = f"traffic {name!r} changed on this worker, but not every worker followed"
                raise InferenceTimeout(f"{late} within {CONVERGE_TIMEOUT:g} s")
            await asyncio.sleep(POLL_INTERVAL / 2)

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                self.follow()
            except Exception as error:  # a bad look at the file must not end the following: the next one may do
                logger.error("could not follow the other workers' traffic splits", exc_info=error)

    def follow(self) -> None:
        """Apply what changed in the recorded splits, then acknowledge it."""
        recorded = self.read()
        if recorded["generation"] <= self.generation and self.ack_path.exists():
            return
        self.catch_up(recorded)
        self.generation = max(self.generation, recorded["generation"])
        self.ack_path.write_text(str(self.generation))

    def catch_up(self, recorded: dict[str, Any]) -> None:
        for name, change in recorded["splits"].items():
            if change["at"] <= self.applied.get(name, 0):
                continue
            self.applied[name] = change["at"]
            if name not in self.router.entries:
                logger.warning("traffic %s: changed by another worker, but not a traffic name here", name)
                continue
            if change["over"] != [variant.as_table() for variant in self.from_file.get(name, ())]:
                logger.info("traffic %s: the split recorded while serving is older than the settings file's", name)
                continue
            self.router.set_split(name, split_of(change["split"]))

    def read(self) -> dict[str, Any]:
        try:
            recorded: dict[str, Any] = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"generation": 0, "splits": {}}
        return recorded

    def write(self, recorded: dict[str, Any]) -> None:
        """Replace the file at once (a rename), so that a reader never sees half of it."""
        partial = self.path.with_suffix(f".{self.shared.worker}.tmp")
        partial.write_text(json.dumps(recorded))
        partial.replace(self.path)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
