"""Workers converging on one set of loaded models: the model repository with ``--workers N``.

Each worker has its own models. A load or unload is handled by the worker that
got the request: under a file lock it applies the change to its own models,
then records it in the shared desired state (a generation number, and for each
model its wanted state and the generation that last changed it). Every worker
polls that file and applies what changed, then acknowledges the generation. The
request is answered once every live worker has acknowledged it, so a request
right after a load or unload answers the same on any worker. A worker that
starts (or restarts) applies the desired state before it serves.

The files live in a directory the supervisor makes for the run
(``STEVEDORE_REPOSITORY_DIR``); with one worker there is none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stevedore_server.base.pids import alive

DIRECTORY_ENV = "STEVEDORE_REPOSITORY_DIR"
LOADED, UNLOADED = "loaded", "unloaded"


@dataclass
class Desired:
    """The models every worker should have: each name's wanted state and the generation that set it."""

    generation: int = 0
    models: dict[str, tuple[str, int]] = field(default_factory=dict)

    def changed_since(self, generations: dict[str, int]) -> dict[str, str]:
        """The wanted state of each model changed after the generations a worker has applied."""
        return {name: state for name, (state, set_at) in self.models.items() if set_at > generations.get(name, 0)}


class SharedState:
    """The desired state and the workers' acknowledgements, as files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.desired_path = directory / "desired.json"
        # The process id, for telling live workers, and a token, for telling apart two apps of one process (tests).
        worker = self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ack_path = directory / f"ack-{worker}"
        self.trained_path = directory / f"trained-{worker}"

    @staticmethod
    def create_for_workers() -> Path:
        """A fresh directory for a run's workers (the serving process announces it to them: ``DIRECTORY_ENV``)."""
        return Path(tempfile.mkdtemp(prefix="stevedore-repository-"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One worker changes the desired state at a time (blocking: call it off the event loop)."""
        with open(self.directory / "lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> Desired:
        try:
            raw = json.loads(self.desired_path.read_bytes())
        except FileNotFoundError:
            return Desired()
        return Desired(raw["generation"], {name: (state, at) for name, (state, at) in raw["models"].items()})

    def write(self, desired: Desired) -> None:
        """Replace the desired state at once (a rename), so a reader never sees half of it."""
        partial = self.desired_path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"generation": desired.generation, "models": desired.models}))
        partial.replace(self.desired_path)

    def acknowledge(self, generation: int) -> None:
        self.ack_path.write_text(str(generation))

    def acknowledged(self) -> list[int]:
        """The generation each live worker has applied (a worker that exited is left out)."""
        return self._of_live_workers("ack-*")

    def followed_trained(self, row: int) -> None:
        """This worker has looked at the trained versions recorded up to ``row``: serves them, or logged why not."""
        self.trained_path.write_text(str(row))

    def trained_followed(self) -> list[int]:
        """The last trained version's row each live worker has looked at."""
        return self._of_live_workers("trained-*")

    def of_live_workers(self, prefix: str) -> list[int]:
        """The number each live worker wrote in its file ``{prefix}-{worker}`` (the traffic splits' follow this
        way too: ``traffic_convergence``)."""
        return self._of_live_workers(f"{prefix}-*")

    def _of_live_workers(self, pattern: str) -> list[int]:
        found = []
        for path in self.directory.glob(pattern):
            with contextlib.suppress(FileNotFoundError, ValueError):
                if alive(int(path.name.split("-")[1])):
                    found.append(int(path.read_text()))
        return found
