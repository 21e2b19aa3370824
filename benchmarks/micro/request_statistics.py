"""core/statistics.py: what Triton's statistics cost a request.

Times what one request of the Open Inference Protocol records (its timing
opened and closed, the model attached, input, the call on a thread, output, the
execution and the outcome counted), with no model or
I/O around it, and sets it beside one inline one-row predict of the example
model through ``Inference.call`` (which records most of it too). The recording
must stay a small share of the cheapest request; if it grows, count less.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core import statistics as model_statistics
from stevedore_server.core.inference import Action, JSONValue, ModelRef

REQUESTS = 50_000
CALLS = 2000
ROUNDS = 5
ROW = [[5.1, 3.5, 1.4, 0.2]]


def one_request(counted: model_statistics.ModelStatistics) -> None:
    """The recording of one request as the front end, the core and the runtime make it."""
    with model_statistics.RequestTimer() as timing:
        model_statistics.attach(counted)
        started = time.perf_counter_ns()
        model_statistics.input_since(started)
        model_statistics.validated(started, 1)
        timing.queued = time.perf_counter_ns()
        timing.run(len, ROW)  # the model's call, as on its thread
        model_statistics.timed_thread_call(timing, counted, 1)
        model_statistics.called(started, counted)
        model_statistics.output_since(time.perf_counter_ns())


def per_request() -> float:
    counted = model_statistics.ModelStatistics()
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            one_request(counted)
        rounds.append((time.perf_counter() - started) / REQUESTS)
    return statistics.median(rounds)


async def per_call() -> float:
    """Seconds an inline one-row predict of iris through ``Inference.call``, median of ``ROUNDS`` rounds."""
    settings = Settings(plugins=("stevedore-sklearn-logreg",))
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
    recording = per_request()
    call = asyncio.run(per_call())
    print(f"the statistics of one request, median of {ROUNDS} rounds of {REQUESTS:,}")
    print(f"  recording a request:                    {recording * 1e6:8.2f} µs")
    print(f"  an inline one-row predict of iris:      {call * 1e6:8.2f} µs (Inference.call, recording included)")
    print(f"  recording / predict:                    {recording / call:8.1%}  (keep it a few per cent)")


if __name__ == "__main__":
    main()
