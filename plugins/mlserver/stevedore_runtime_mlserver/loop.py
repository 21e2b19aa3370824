"""An event loop of the model's own, on a thread of its own: MLServer's ``load`` and ``predict`` are coroutines,
and a stevedore predict runs on one of the model's worker threads (or in a worker process), never on the server's
event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")
#: Seconds the loop's thread gets to finish once stopped.
STOP_GRACE = 10.0


class ModelLoop:
    """Runs coroutines on one loop, from any thread (``run`` blocks the calling thread until it is done)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"mlserver-{name}", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Result]) -> Result:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_GRACE)
        if not self.thread.is_alive():
            self.loop.close()
