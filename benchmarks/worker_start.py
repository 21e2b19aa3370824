"""How long a model's worker process (``processes = N``) takes from its start to its model loaded and
self-tested, and which of the server's stacks it imported on the way.

Starts the real ``python -m stevedore_server.worker`` on the example plugin's ``iris`` model, as the server
does, several times; with ``PYTHONPROFILEIMPORTTIME=1`` the worker's own import lines go to stderr.

    python benchmarks/worker_start.py [STARTS]
"""

from __future__ import annotations

import statistics
import sys
import time

from stevedore_server.base.settings import Settings
from stevedore_server.processes.isolation import selection_orders
from stevedore_server.processes.spawn import receive, start_worker


def main(starts: int) -> None:
    orders = {"mode": "serve", "model": "iris", "version": "1", **selection_orders(Settings(log_level="warning"))}
    seconds = []
    for _ in range(starts):
        started = time.perf_counter()
        process, connection = start_worker(sys.executable, orders)
        with connection:
            loaded = receive(connection, process, 120, "loading its model")
            seconds.append(time.perf_counter() - started)
        process.wait(10)
        if loaded["state"] != "ready":
            raise SystemExit(f"the model did not load: {loaded['reason']}")
    print(f"worker start to model ready: median {statistics.median(seconds):.3f} s, min {min(seconds):.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
