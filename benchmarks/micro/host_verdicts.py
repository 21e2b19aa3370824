"""frontends/web/origins.py's kept verdicts: ``BrowserGuard`` remembers whether a ``Host`` value is allowed, against
working it out (a regular expression, then a set or an IP address parse) on every request.

Delete ``BrowserGuard.host_verdicts`` when the two come close.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from stevedore_server.frontends.web.origins import BrowserGuard, default_allowed_hosts

REQUESTS = 100_000
ROUNDS = 5
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"content-length", b"22")]


async def served(scope: Any, receive: Any, send: Any) -> None:
    return None


async def per_request(guard: BrowserGuard, forget: bool) -> float:
    scope = {"type": "http", "method": "POST", "headers": HEADERS}
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            if forget:
                guard.host_verdicts.clear()
            await guard(scope, None, None)  # type: ignore[arg-type]
        rounds.append((time.perf_counter() - started) / REQUESTS)
    return statistics.median(rounds)


async def main() -> None:
    guard = BrowserGuard(served, hosts=default_allowed_hosts("127.0.0.1"), cors_origins=frozenset())
    kept = await per_request(guard, forget=False)
    worked_out = await per_request(guard, forget=True)
    print(f"a loopback POST through BrowserGuard, median of {ROUNDS} rounds of {REQUESTS:,}")
    print(f"  verdict kept:        {kept * 1e6:6.2f} µs a request")
    print(f"  worked out each time: {worked_out * 1e6:6.2f} µs a request")
    print(f"  worked out / kept:    {worked_out / kept:6.2f}x  (the trick pays while this is well over 1)")


if __name__ == "__main__":
    asyncio.run(main())
