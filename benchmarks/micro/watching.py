"""frontends/web/watching.py: what watching a request's client for a disconnect costs, and what its timer saves.

Times ``while_connected`` around an inference that answers at the next turn of the event loop (a fast model's),
against the inference alone: with the watcher started after ``WATCH_AFTER`` (the server's way: a fast answer
pays for a timer only) and started at once (a task made and cancelled on every request). Delete the timer when
the two come close.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from stevedore_server.core.deadlines import Bound
from stevedore_server.frontends.web import watching

CALLS = 20000
ROUNDS = 5


class Connected:
    """A client that stays: ``receive`` waits for a disconnect that never comes."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.never.wait()
        return {"type": "http.disconnect"}


async def answer() -> int:
    await asyncio.sleep(0)
    return 1


async def at_once(client: Any) -> int:
    """The inference with its watcher's task made at once, and cancelled after."""
    watcher = watching.Watcher.__new__(watching.Watcher)
    watcher.receive, watcher.task, watcher.bound = client.receive, asyncio.current_task(), Bound()
    task = asyncio.create_task(watcher.watch())
    try:
        return await answer()
    finally:
        task.cancel()


async def per_call(how: str) -> float:
    client: Any = Connected()
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            if how == "alone":
                await answer()
            elif how == "timer":
                await watching.while_connected(client, Bound(), answer())
            else:
                await at_once(client)
        rounds.append((time.perf_counter() - started) / CALLS)
    return statistics.median(rounds)


def main() -> None:
    alone = asyncio.run(per_call("alone"))
    timed = asyncio.run(per_call("timer"))
    task = asyncio.run(per_call("task"))
    print(f"an inference answering at the loop's next turn, median of {ROUNDS} rounds of {CALLS}")
    print(f"  alone:                               {alone * 1e6:6.1f} µs")
    print(f"  watched from WATCH_AFTER (a timer):  {(timed - alone) * 1e6:6.1f} µs more")
    print(f"  watched at once (a task):            {(task - alone) * 1e6:6.1f} µs more")
    print(f"  ratio:                               {(task - alone) / max(timed - alone, 1e-9):6.2f}x")


if __name__ == "__main__":
    main()
