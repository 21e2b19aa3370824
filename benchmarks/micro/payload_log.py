"""core/payload_log.py: what the payload log costs a request, and what handing the bodies to its thread saves.

Times, per inference, what a route and the protocol's edge do for the payload
log (``frontends.payload_notes``: the exchange begun, its request and response
noted, handed over to the queue) with the log off, and on with a JSON lines
file, its thread draining meanwhile; and beside it the same record made whole on
the request path (the bodies parsed, the line serialized and written) as a log
without a thread of its own would. The bodies are a 10-row predict's.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer
from stevedore_server.frontends.payload_notes import from_json, http_exchange, note_request, note_response
from stevedore_server.plugins.builtin.payload_log import sink_for
from stevedore_server.plugins.manager import get_plugin_manager

RECORDS = 900  # under the queue's bound, so that none is dropped
ROUNDS = 7
ROWS = [[5.1, 3.5, 1.4, 0.2]] * 10
REQUEST = orjson.dumps(ROWS)
RESPONSE = orjson.dumps({"model_name": "iris", "model_version": "1", "predictions": [0] * 10})


def server_with(settings: Settings) -> ModelServer:
    manager, _ = get_plugin_manager(load_entry_points=False)
    return startup.build_server(settings, startup.load(settings, manager))


class Model:
    name = "iris"
    version = "1"


def one_inference(server: ModelServer, model: Any) -> None:
    scope: dict[str, Any] = {}
    note_request(scope, server, model, from_json, REQUEST)
    note_response(scope, from_json, RESPONSE)
    exchange = http_exchange(scope)
    if exchange is not None:
        exchange.answered("POST /models/{name}/predict", "http", 200, True, 0.001, "req")


def inline_record(server: ModelServer, model: Any, target: str) -> None:
    """The record made whole on the request path: what the log's thread does instead."""
    exchange = server.payload_log.begin(model.name, model.version)
    if exchange is not None:
        exchange.request = functools.partial(from_json, REQUEST)
        exchange.response = functools.partial(from_json, RESPONSE)
        exchange.outcome = ("POST /models/{name}/predict", "http", 200, True, 0.001, "req")
        record = server.payload_log.record(exchange)
        if record is not None:
            sink_for(target, 8000).send(record)


def per_record(action: Any) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(RECORDS):
            action()
        rounds.append((time.perf_counter() - started) / RECORDS)
        time.sleep(0.2)  # the thread empties the queue between rounds
    return statistics.median(rounds)


def main() -> None:
    model = Model()
    with tempfile.TemporaryDirectory() as directory:
        target = f"file:{Path(directory) / 'payloads.jsonl'}"
        off = server_with(Settings())
        on = server_with(Settings(payload_log=target))
        timings = {
            "log off": per_record(lambda: one_inference(off, model)),
            "log on, thread": per_record(lambda: one_inference(on, model)),
            "log on, inline": per_record(lambda: inline_record(on, model, target)),
        }
        on.payload_log.close()
    for name, seconds in timings.items():
        print(f"{name:>16}: {seconds * 1e6:6.2f} µs a request")
    print(f"the thread saves the request path {timings['log on, inline'] / timings['log on, thread']:.1f}x")


if __name__ == "__main__":
    main()
