"""Sample the memory of a server's process tree in the background while it is loaded."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .procs import Memory, tree_memory


@dataclass(frozen=True)
class Sample:
    at: float  # time.time()
    memory: Memory


class MemorySampler:
    """Reads the tree's memory every ``interval`` seconds until stopped."""

    def __init__(self, root: int, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[Sample] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{root}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            memory = tree_memory(self.root)
            if memory.processes:
                self.samples.append(Sample(time.time(), memory))
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[Memory]:
        return [sample.memory for sample in list(self.samples) if start <= sample.at <= end]

    def peak(self, start: float, end: float) -> Memory | None:
        """The largest RSS and anonymous RSS sampled between two ``time.time()`` values."""
        window = self.between(start, end)
        if not window:
            return None
        return Memory(max(m.rss_mib for m in window), max(m.anon_mib for m in window), max(m.processes for m in window))
