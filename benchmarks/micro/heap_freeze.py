"""process/draining.py's heap freeze: how long a full garbage collection takes with and without ``gc.freeze()``.

Loads the example plugin as a server process does, then times full
collections (``gc.collect(2)``) over the startup heap, then freezes it (as
``process.draining.freeze_heap`` does once the models are loaded) and times them again.
A full collection stalls the event loop for as long as it takes, several times
a second under batching; delete the freeze when the two come close.
"""

from __future__ import annotations

import gc
import statistics
import time

from stevedore_server.base.settings import Settings
from stevedore_server.core import startup

RUNS = 7


def full_collection_seconds() -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        gc.collect(2)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    settings = Settings(plugins=("stevedore-sklearn-logreg",))
    server = startup.build_server(settings, startup.load(settings))
    objects = len(gc.get_objects())
    before = full_collection_seconds()
    gc.freeze()
    after = full_collection_seconds()
    gc.unfreeze()
    print(f"full collections over the startup heap ({objects:,} objects, {len(server.registry.models)} models)")
    print(f"  without gc.freeze(): {before * 1e6:9.0f} µs")
    print(f"  with gc.freeze():    {after * 1e6:9.0f} µs")
    print(f"  ratio:               {before / max(after, 1e-6):9.0f}x  (the trick pays while this is well over 1)")


if __name__ == "__main__":
    main()
