"""The mixed load: a thread a lane, each sending its kind of request at a modest pace until told to stop (the
machine's two cores are shared with the server).

- iris routes: the stevedore, original, V2 JSON and V2 binary predicts of ``iris`` (threads), in turn;
- spin: predicts of ``spin`` (its worker processes);
- gRPC: ModelInfer of ``iris``;
- stream: ``spin``'s stream (its items made in a worker process);
- jobs: a long prediction every ``job_interval`` s and a training every ``training_interval`` s, on the jobs
  database of the half, and a poll of the unfinished ones;
- repository: ``iris-proba`` unloaded (then it must answer 503) and loaded again (then it must answer).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import httpx

from .clients import (
    REPOSITORY_TIMEOUT,
    ROW,
    GrpcClient,
    checked,
    http_client,
    iris_predict,
    original_predict,
    spin_predict,
    spin_stream,
    v2_binary,
    v2_json,
)
from .jobs import JobTracker
from .records import INFERENCE, REPOSITORY, STREAM, Outcome, Recorder


@dataclass(frozen=True)
class Pace:
    """Seconds between a lane's requests (at most: a slow answer delays the next)."""

    iris: float = 0.05
    spin: float = 0.1
    grpc: float = 0.1
    stream: float = 0.5
    job_interval: float = 6.0
    training_interval: float = 60.0
    repository_interval: float = 20.0
    poll: float = 1.0


class Lane(threading.Thread):
    """Runs ``step`` every ``interval`` seconds until ``stop`` is set."""

    def __init__(self, name: str, stop: threading.Event, interval: float, step: Callable[[], object]) -> None:
        super().__init__(name=f"soak-{name}", daemon=True)
        self.stop, self.interval, self.step = stop, interval, step

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.step()
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def iris_routes(client: httpx.Client, recorder: Recorder) -> Callable[[], None]:
    """The iris routes in turn, a request a step."""
    routes: Iterator[tuple[str, Callable[[httpx.Client], Outcome]]] = itertools.cycle([
        ("POST /models/iris/predict", iris_predict),
        ("POST /predict (original)", original_predict),
        ("POST /v2/models/iris/infer (JSON)", v2_json),
        ("POST /v2/models/iris/infer (binary)", v2_binary),
    ])  # fmt: skip

    def step() -> None:
        route, send = next(routes)
        recorder.call(route, INFERENCE, lambda: send(client))

    return step


def repository_cycle(client: httpx.Client, recorder: Recorder) -> None:
    """Unload ``iris-proba``, see it answer 503; load it, see it answer; each check only after its change."""
    for change, status in (("unload", 503), ("load", 200)):
        path = f"/v2/repository/models/iris-proba/{change}"
        done = recorder.call(f"POST {path}", REPOSITORY, partial(repository_change, client, path))
        if done.ok:
            route = f"POST /models/iris-proba/predict after {change}"
            recorder.call(route, REPOSITORY, partial(proba_answers, client, status))


def repository_change(client: httpx.Client, path: str) -> Outcome:
    return checked(lambda: client.post(path, timeout=REPOSITORY_TIMEOUT), lambda response: True)


def proba_answers(client: httpx.Client, status: int) -> Outcome:
    """``iris-proba``'s answer: ``status`` (503 unloaded), and when loaded its three class probabilities."""
    return checked(lambda: client.post("/models/iris-proba/predict", json=[ROW]),
                   lambda r: status != 200 or len(r.json()["predictions"][0]) == 3, status)  # fmt: skip


def jobs_step(jobs: JobTracker, pace: Pace) -> Callable[[], None]:
    next_predict = next_training = time.monotonic()

    def step() -> None:
        nonlocal next_predict, next_training
        now = time.monotonic()
        if now >= next_training:
            next_training = now + pace.training_interval
            jobs.training()
        if now >= next_predict:
            next_predict = now + pace.job_interval
            jobs.long_predict()
        jobs.poll_unfinished()

    return step


class Load:
    """The lanes of one half, started at once and stopped together."""

    def __init__(self, url: str, grpc_target: str, recorder: Recorder, jobs: JobTracker, pace: Pace) -> None:
        self.stop_event = threading.Event()
        self.clients = [http_client(url) for _ in range(4)]
        iris, spin, stream, repository = self.clients
        self.grpc = GrpcClient(grpc_target)
        grpc = self.grpc
        lanes = {
            "iris": (pace.iris, iris_routes(iris, recorder)),
            "spin": (pace.spin, lambda: recorder.call("POST /models/spin/predict", INFERENCE,
                                                      lambda: spin_predict(spin))),
            "grpc": (pace.grpc, lambda: recorder.call("gRPC ModelInfer iris", INFERENCE, grpc.infer)),
            "stream": (pace.stream, lambda: recorder.call("POST /models/spin/predict/stream", STREAM,
                                                          lambda: spin_stream(stream))),
            "jobs": (pace.poll, jobs_step(jobs, pace)),
            "repository": (pace.repository_interval, lambda: repository_cycle(repository, recorder)),
        }  # fmt: skip
        self.lanes = [Lane(name, self.stop_event, interval, step) for name, (interval, step) in lanes.items()]

    def start(self) -> None:
        for lane in self.lanes:
            lane.start()

    def stop(self) -> None:
        """Stop every lane after its request in flight (a repository change may wait for a restarting worker)."""
        self.stop_event.set()
        for lane in self.lanes:
            lane.join(REPOSITORY_TIMEOUT + 30)
        for client in self.clients:
            client.close()
        self.grpc.close()
