"""Stopping on SIGTERM loses no request: against the real server, under load, with one worker and with two."""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from stevedore_server.process.sockets import refuse_new_handshakes, take_backlog

from .venvs import Server, Venv

SETOSA = [5.1, 3.5, 1.4, 0.2]
CLIENTS = 32
#: Short enough that a client whose SYN the stopping server ignores gives up well before the test does.
TIMEOUT = httpx.Timeout(30, connect=5)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the socket filter is Linux's")


@dataclass
class Outcomes:
    """What the clients saw, counted across their threads."""

    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str) -> None:
        with self.lock:
            self.counts[outcome] += 1

    def failures(self) -> dict[str, int]:
        return {outcome: count for outcome, count in self.counts.items() if outcome not in ("200", "503", "refused")}


def outcome_of(response: httpx.Response) -> str:
    """``200`` for the right prediction, ``503`` for a refusal that closes the connection; anything else is wrong."""
    if response.status_code == 200 and response.json()["predictions"] == [0]:
        return "200"
    if response.status_code == 503 and response.headers.get("connection") == "close":
        return "503"
    return f"bad: {response.status_code} connection={response.headers.get('connection')} {response.text[:200]}"


def predict(send: Callable[[], httpx.Response]) -> str:
    try:
        return outcome_of(send())
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return "refused"  # no connection was made: the client knows it can retry
    except httpx.HTTPError as error:
        # Connected, then closed or reset without an answer: lost, even if the server never read the request.
        return f"lost: {type(error).__name__}: {error}"


def fresh_connections(url: str, stop: threading.Event, outcomes: Outcomes) -> None:
    """Predict in a loop, each time on a new connection: every request asks for its connection to be closed."""
    with httpx.Client(timeout=TIMEOUT, headers={"Connection": "close"}) as client:
        predict_loop(client, url, stop, outcomes)


def keep_alive(url: str, stop: threading.Event, outcomes: Outcomes) -> None:
    """Predict in a loop on one connection, reused until the server says it closes it."""
    with httpx.Client(timeout=TIMEOUT) as client:
        predict_loop(client, url, stop, outcomes)


def predict_loop(client: httpx.Client, url: str, stop: threading.Event, outcomes: Outcomes) -> None:
    while not stop.is_set():
        outcome = predict(lambda: client.post(url, json=[SETOSA]))
        outcomes.add(outcome)
        if outcome == "refused":
            time.sleep(0.05)


def served(log: str, status: int) -> int:
    return len(re.findall(rf'"POST /models/iris/predict" {status} ', log))


@pytest.mark.parametrize("connections", [fresh_connections, keep_alive], ids=["fresh", "keep-alive"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_answers_every_connection(
    ops_venv: Venv, tmp_path: Path, workers: str, connections: Callable[[str, threading.Event, Outcomes], None]
) -> None:
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", workers)
    server.wait_for("/readyz")
    outcomes = Outcomes()
    stop = threading.Event()
    url = server.url + "/models/iris/predict"
    threads = [threading.Thread(target=connections, args=(url, stop, outcomes)) for _ in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        os.kill(server.process.pid, signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        server.stop()
    log = server.log()
    print(f"workers {workers}, {connections.__name__}: {dict(outcomes.counts)}")
    assert exit_code == 0, log[-3000:]
    assert outcomes.failures() == {}, f"{outcomes.counts}\n{log[-3000:]}"
    assert outcomes.counts["200"] > CLIENTS
    # Every request the server answered reached its client.
    assert (served(log, 200), served(log, 503)) == (outcomes.counts["200"], outcomes.counts["503"])
    assert log.count("SIGTERM: draining") == int(workers)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_during_the_shutdown_delay_the_server_is_not_ready_but_serves(
    ops_venv: Venv, tmp_path: Path, workers: str
) -> None:
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", workers, "--shutdown-delay", "1")
    server.wait_for("/readyz")
    url = server.url + "/models/iris/predict"
    with httpx.Client(timeout=TIMEOUT) as pooled:
        assert pooled.post(url, json=[SETOSA]).headers.get("connection") != "close"  # kept alive
        terminated = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        # With workers, the supervisor looks at its signals twice a second before passing SIGTERM on.
        within = 0.3 if workers == "1" else 0.8
        while (readiness := httpx.get(server.url + "/readyz", timeout=TIMEOUT)).status_code == 200:
            assert time.monotonic() - terminated < within, "readiness still 200"
            time.sleep(0.02)
        assert readiness.status_code == 503 and readiness.headers["connection"] == "close"
        time.sleep(0.1)  # for the other worker, signalled at the same time
        answers = [pooled.post(url, json=[SETOSA]), httpx.post(url, json=[SETOSA], timeout=TIMEOUT)]
        assert time.monotonic() - terminated < 1  # still within the delay
    assert [(answer.status_code, answer.headers["connection"]) for answer in answers] == [(200, "close")] * 2
    try:
        exit_code = server.process.wait(timeout=30)
    finally:
        server.stop()
    assert exit_code == 0, server.log()


def test_a_worker_stopping_alone_leaves_the_socket_to_the_others(ops_venv: Venv, tmp_path: Path) -> None:
    # A restart (SIGHUP), or one worker stopped by hand: the workers share the listening socket, so the one that
    # stops must not stop handshakes on it.
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", "2")
    try:
        server.wait_for("/readyz")
        worker = re.findall(r"Started server process \[(\d+)\]", server.log())[0]
        os.kill(int(worker), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while f"Finished server process [{worker}]" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        url = server.url + "/models/iris/predict"
        answers = [httpx.post(url, json=[SETOSA], headers={"Connection": "close"}, timeout=TIMEOUT) for _ in range(20)]
        assert [answer.status_code for answer in answers] == [200] * 20
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log()


def test_workers_leave_no_temporary_directory_behind(ops_venv: Venv, tmp_path: Path) -> None:
    """With ``--workers 2`` the run makes a directory for the workers' metrics and one for their shared model
    state; a server stopped by SIGTERM removes both."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", "2", TMPDIR=str(temporary))
    try:
        server.wait_for("/readyz")
        made = sorted(path.name.rsplit("-", 1)[0] for path in temporary.iterdir())
        assert made == ["stevedore-metrics", "stevedore-repository"], made
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log()
    assert list(temporary.iterdir()) == []


@linux_only
def test_a_listener_refusing_handshakes_still_gives_its_backlog() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        waiting = socket.create_connection(address)
        refuse_new_handshakes([listener])
        late = socket.socket()
        late.setblocking(False)
        late.connect_ex(address)
        taken = take_backlog(listener)
        try:
            assert len(taken) == 1  # the connection made before, not the one after
            assert taken[0].getpeername() == waiting.getsockname()
        finally:
            for connection in [*taken, waiting]:
                connection.close()
    with late:
        # Its SYN went unanswered; sent again a second later, to a closed port now, it is refused.
        select.select([], [late], [], 5)
        assert late.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
