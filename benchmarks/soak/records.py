"""What the soak records: each request's route, time and outcome, kept by one thread-safe recorder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: What a route is, for the report: the table by minute counts the unary inferences only.
INFERENCE, STREAM, JOBS, REPOSITORY, FAULT = "inference", "stream", "jobs", "repository", "fault"


@dataclass(frozen=True)
class Outcome:
    """How one request ended: ``label`` is "ok" or names the failure (an HTTP status, a transport error's class,
    a gRPC status code, a stream's error event, a wrong answer); ``detail`` is what the server said."""

    label: str
    detail: str = ""
    error_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.label == "ok"


OK = Outcome("ok")


@dataclass(frozen=True)
class Request:
    route: str
    kind: str
    half: str
    #: ``time.monotonic()`` when it was sent and when its outcome was known.
    started: float
    ended: float
    outcome: Outcome

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class Recorder:
    """Every request of the run; ``half`` names the half the next ones belong to."""

    half: str = ""
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def call(self, route: str, kind: str, action: Callable[[], Outcome]) -> Outcome:
        """Run ``action`` (one request) and record its outcome with its times."""
        started = time.monotonic()
        outcome = action()
        self.add(Request(route, kind, self.half, started, time.monotonic(), outcome))
        return outcome

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def of_half(self, half: str) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.half == half]
