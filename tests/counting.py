"""A counting test model, and a real server serving it: which calls reached the model, and which did not.

Each row of a ``counting`` predict is ``[tag, seconds]``: the model writes one line ``tag pid`` a row to the file
``COUNTING_MODEL_FILE`` names as its call begins (not a ``STEVEDORE_*`` variable: worker processes do not get
those), sleeps the longest ``seconds`` of its rows, and answers the tags. A test gives each request a tag of its
own and reads back which tags ran (``ran``), and in which process (``pids``): a request dropped before its model
ran it never writes its line. A row of ``seconds`` -1 (``HELD``) holds its call until the test lets it go
(``release``): the others queue behind it for as long as the test needs. The model's worker processes import
this module: what only the tests use is imported where it is used.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stevedore_server import Predictor

if TYPE_CHECKING:
    from .venvs import Server

FILE = "COUNTING_MODEL_FILE"
#: The ``seconds`` of a row that holds its call until ``release``.
HELD = -1


class Counting(Predictor):
    name = "counting"
    predict_schema = {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number", "minimum": -1}, "minItems": 2, "maxItems": 2},
    }
    predict_fixture = [[0, 0]]

    def run_predict(self, rows: Any) -> list[float]:
        rows = [list(row) for row in rows]
        path = os.environ.get(FILE)
        if path:  # one write: lines of calls made at once in several threads or processes stay whole
            lines = "".join(f"{row[0]:g} {os.getpid()}\n" for row in rows)
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(descriptor, lines.encode())
            finally:
                os.close(descriptor)
        seconds = max(row[1] for row in rows)
        if any(row[1] < 0 for row in rows) and path:
            held(Path(path))
        time.sleep(max(seconds, 0))
        return [row[0] for row in rows]


#: Seconds a held call waits for its release at most.
HOLD_LIMIT = 120.0


def held(calls: Path) -> None:
    """Wait until the test releases the held call (``release``), or ``HOLD_LIMIT``."""
    give_up = time.monotonic() + HOLD_LIMIT
    gate = calls.with_suffix(".release")
    while not gate.exists() and time.monotonic() < give_up:
        time.sleep(0.01)
    gate.unlink(missing_ok=True)


def release(calls: Path) -> None:
    """Let the held call go."""
    calls.with_suffix(".release").touch()


class CountingBatched(Counting):
    """The same model, batched: a batch is one call, its rows' lines written together."""

    name = "counting-batched"
    max_batch_size = 64
    max_batch_time = 0.05


def serve(directory: Path, config: str, *args: str) -> tuple[Server, Path]:
    """The real server of the environment running the tests, serving the counting models with ``config``, ready;
    and the file their calls are written to."""
    from .helpers import record_distribution
    from .venvs import REPO, Server, Venv

    site = directory / "site"
    entry_points = {"counting": "tests.counting:Counting", "counting-batched": "tests.counting:CountingBatched"}
    record_distribution(site, "stevedore-test-counting", entry_points)
    (directory / "stevedore.toml").write_text(config)
    calls = directory / "calls.txt"
    here = Venv(Path(sys.prefix), ())
    options = ("--config", str(directory / "stevedore.toml"), *args)
    environment = {"PYTHONPATH": f"{REPO}:{site}", FILE: str(calls)}
    server = Server.start(here, directory / "server.log", *options, **environment)
    try:
        server.wait_for("/readyz", deadline=120)
    except BaseException:
        server.stop()
        raise
    return server, calls


@contextlib.contextmanager
def running(directory: Path, config: str, *args: str) -> Iterator[tuple[Server, Path]]:
    server, calls = serve(directory, config, *args)
    try:
        yield server, calls
    finally:
        server.stop()


def lines(calls: Path) -> list[tuple[int, int]]:
    """(tag, pid) of each row the model ran, the self-test's (tag 0) left out."""
    if not calls.exists():
        return []
    found = [tuple(int(float(field)) for field in line.split()) for line in calls.read_text().splitlines()]
    return [(tag, pid) for tag, pid in found if tag != 0]


def ran(calls: Path) -> set[int]:
    """The tags the model ran."""
    return {tag for tag, _ in lines(calls)}


def pids(calls: Path, tag: int) -> list[int]:
    """The processes that ran ``tag``."""
    return [pid for found, pid in lines(calls) if found == tag]


def body(tag: int, seconds: float = 0.0) -> list[list[float]]:
    return [[tag, seconds]]


def raw_request(path: str, payload: bytes, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 POST as its bytes on the wire, to send on a socket a test then closes (a client that leaves)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    import httpx

    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total
