"""Stopping loses no request, whoever sends the signal: against the real server, under load, with one worker and
with two, SIGTERM or SIGINT to its main process, to its whole process group, or to one worker (restarted alone)."""

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

from . import helpers
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


def worker_pids(log: str) -> list[int]:
    """The serving processes started so far (with workers, each worker; else the one process)."""
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log)]


def wait_until(condition: Callable[[], bool], what: str, server: Server) -> None:
    """``helpers.wait_until``, failing with the end of the server's log."""
    helpers.wait_until(condition, what, interval=0.02, explain=lambda: server.log()[-3000:])


@dataclass(frozen=True)
class Stop:
    """One way the service is stopped: who gets the signal, which signal."""

    recipient: str  # "main" (the server's process), "group" (every process of its group), "worker" (one worker)
    signum: signal.Signals = signal.SIGTERM

    def __str__(self) -> str:
        return f"{self.signum.name}-to-{self.recipient}"


#: The matrix: every recipient and both stop signals, with 1 and 2 workers, on fresh and keep-alive connections,
#: with and without a shutdown delay. One worker signalled alone exists only with several.
STOP_MATRIX = [
    pytest.param(stop, workers, connections, delay, id=f"{stop}-workers{workers}-{connections.__name__}-delay{delay}")
    for stop in (Stop("main"), Stop("group"), Stop("worker"), Stop("main", signal.SIGINT), Stop("group", signal.SIGINT))
    for workers in ("1", "2")
    for connections in (fresh_connections, keep_alive)
    for delay in ("0", "1")
    if (stop.recipient != "worker" or workers == "2") and (stop.signum == signal.SIGTERM or delay == "0")
]


@pytest.mark.parametrize(("stop", "workers", "connections", "delay"), STOP_MATRIX)
def test_every_stop_answers_every_connection_it_accepted(
    ops_venv: Venv,
    tmp_path: Path,
    stop: Stop,
    workers: str,
    connections: Callable[[str, threading.Event, Outcomes], None],
    delay: str,
) -> None:
    stop_under_load(ops_venv, tmp_path, stop, connections, "--workers", workers, "--shutdown-delay", delay)


@pytest.mark.parametrize("stop", [Stop("group"), Stop("group", signal.SIGINT)], ids=str)
def test_a_stop_of_the_group_leaves_the_model_processes_to_answer_what_is_in_flight(
    ops_venv: Venv, tmp_path: Path, stop: Stop
) -> None:
    # The model's worker processes lead a session of their own: the group's signal does not reach them, and the
    # server stops them once its requests are answered.
    config = tmp_path / "processes.toml"
    config.write_text("[models.iris]\nprocesses = 2\n")
    stop_under_load(ops_venv, tmp_path, stop, fresh_connections, "--workers", "2", "--config", str(config))


def stop_under_load(
    venv: Venv, tmp_path: Path, stop: Stop, connections: Callable[[str, threading.Event, Outcomes], None], *args: str
) -> None:
    """Serve ``CLIENTS`` clients, stop as ``stop`` says, and check that every accepted connection was answered."""
    server = Server.start(venv, tmp_path / "server.log", *args)
    server.wait_for("/readyz")
    outcomes = Outcomes()
    halt = threading.Event()
    url = server.url + "/models/iris/predict"
    threads = [threading.Thread(target=connections, args=(url, halt, outcomes)) for _ in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: outcomes.counts["200"] >= CLIENTS, "a first answer to each client", server)
        stop_the_service(server, stop, outcomes)
        exit_code = server.process.wait(timeout=60)
    finally:
        halt.set()
        for thread in threads:
            thread.join(timeout=30)
        server.stop()
    log = server.log()
    print(f"{stop}, {connections.__name__}, {' '.join(args)}: {dict(outcomes.counts)}")
    assert exit_code == 0, log[-3000:]
    assert outcomes.failures() == {}, f"{outcomes.counts}\n{log[-3000:]}"
    # Every request the server answered reached its client.
    assert (served(log, 200), served(log, 503)) == (outcomes.counts["200"], outcomes.counts["503"])
    drained = len(worker_pids(log))  # each serving process drained once, a restarted worker too
    assert log.count(": draining") == drained, log[-3000:]
    # No worker dies and is replaced during a stop; the one stopped alone is.
    assert log.count("] died") == (1 if stop.recipient == "worker" else 0), log[-3000:]


def stop_the_service(server: Server, stop: Stop, outcomes: Outcomes) -> None:
    """Send the stop; for one worker, see it replaced and the service go on answering, then stop the service."""
    if stop.recipient == "group":
        server.signal_group(stop.signum)
        return
    if stop.recipient == "main":
        os.kill(server.process.pid, stop.signum)
        return
    first, _ = worker_pids(server.log())
    os.kill(first, stop.signum)
    wait_until(lambda: len(worker_pids(server.log())) == 3, f"a worker replacing {first}", server)
    wait_until(lambda: f"Finished server process [{first}]" in server.log(), f"worker {first} exiting", server)
    answered = outcomes.counts["200"]
    wait_until(lambda: outcomes.counts["200"] >= answered + CLIENTS, "answers after the restart", server)
    assert outcomes.counts["refused"] == 0, "the socket stopped taking connections while the others served"
    os.kill(server.process.pid, signal.SIGTERM)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_during_the_shutdown_delay_the_server_is_not_ready_but_serves(
    ops_venv: Venv, tmp_path: Path, workers: str
) -> None:
    # A delay far longer than the test: whatever the machine's speed, what it sees happens within it.
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", workers, "--shutdown-delay", "600")
    try:
        server.wait_for("/readyz")
        url = server.url + "/models/iris/predict"
        with httpx.Client(timeout=TIMEOUT) as pooled:
            assert pooled.post(url, json=[SETOSA]).headers.get("connection") != "close"  # kept alive
            server.signal_group(signal.SIGTERM)
            wait_until(lambda: server.log().count(": draining") == int(workers), "every worker draining", server)
            readiness = httpx.get(server.url + "/readyz", timeout=TIMEOUT)
            answers = [pooled.post(url, json=[SETOSA]), httpx.post(url, json=[SETOSA], timeout=TIMEOUT)]
        assert readiness.status_code == 503 and readiness.headers["connection"] == "close"
        assert [(answer.status_code, answer.headers["connection"]) for answer in answers] == [(200, "close")] * 2
        assert server.process.poll() is None and "backlog" not in server.log()  # still serving: within the delay
    finally:
        server.signal_group(signal.SIGKILL)
        server.stop()


def test_a_worker_stalled_longer_than_uvicorns_health_check_is_neither_killed_nor_loses_its_request(
    ops_venv: Venv, tmp_path: Path
) -> None:
    """A worker that cannot answer the supervisor's ping for a while (a loaded machine, a long pause) keeps its
    requests: uvicorn's own 5 seconds killed it, and the requests it held were lost."""
    server = Server.start(ops_venv, tmp_path / "server.log", "--workers", "2")
    try:
        server.wait_for("/readyz")
        stalled, _ = worker_pids(server.log())
        os.kill(stalled, signal.SIGSTOP)
        try:
            time.sleep(8)  # longer than uvicorn's default of 5, with the supervisor pinging twice a second
        finally:
            os.kill(stalled, signal.SIGCONT)
        with httpx.Client(timeout=TIMEOUT, headers={"Connection": "close"}) as client:
            answers = [outcome_of(client.post(server.url + "/models/iris/predict", json=[SETOSA])) for _ in range(8)]
        assert answers == ["200"] * 8
        assert len(worker_pids(server.log())) == 2 and "died" not in server.log(), server.log()[-3000:]
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
