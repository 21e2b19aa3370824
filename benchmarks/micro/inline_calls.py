"""core/inline.py: is a short predict faster on the event loop than on the model's thread?

Times one-row predicts of the example model through the inference core
(``Inference.call``), with the inline policy on (the default for a predictor
declaring ``inline``) and off (``inline_budget = 0``), alternating rounds.
Delete core/inline.py when the ratio comes near 1.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.inference import Action, JSONValue, ModelRef

CALLS = 2000
ROUNDS = 5
ROW = [[5.1, 3.5, 1.4, 0.2]]


async def per_call(settings: Settings) -> float:
    """Seconds a call, the median of ``ROUNDS`` rounds of ``CALLS`` sequential calls."""
    server = startup.build_server(settings, startup.load(settings))
    await startup.start_models(server)
    try:
        call, ref, payload = server.inference.call, ModelRef("iris"), JSONValue(ROW)
        for _ in range(200):  # warm up
            await call(ref, Action.PREDICT, payload)
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(CALLS):
                await call(ref, Action.PREDICT, payload)
            rounds.append((time.perf_counter() - started) / CALLS)
        return statistics.median(rounds)
    finally:
        startup.stop_models(server)


def main() -> None:
    plugins = ("stevedore-sklearn-logreg",)
    inline = asyncio.run(per_call(Settings(plugins=plugins)))
    threads = asyncio.run(per_call(Settings(plugins=plugins, inline_budget=0)))
    print(f"one-row predict of iris through Inference.call, median of {ROUNDS} rounds of {CALLS} calls")
    print(f"  on the event loop (inline):  {inline * 1e6:8.1f} µs a call")
    print(f"  on the model's thread:       {threads * 1e6:8.1f} µs a call")
    print(f"  thread / inline:             {threads / inline:8.2f}x  (the trick pays while this is well over 1)")


if __name__ == "__main__":
    main()
