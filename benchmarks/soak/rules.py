"""The rules that explain a request's failure by a fault the soak caused: each fault, once it has struck, states
the failures it may cause (which requests, which outcome, in which window) and nothing else. A failure no
rule explains is "unexplained", and fails the soak.

Times are ``time.monotonic()``; a rule says them in seconds from the start of the soak (``origin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .records import JOBS, Request

#: Seconds after a kill that a request may still have been sent and reached the dying process (the signal is
#: sent after the time is taken; the kernel tears the process down in a moment).
SENT_SLACK = 0.5
#: Seconds after a worker's kill within which its in-flight requests learn of it (their connection is reset
#: when the process's sockets close).
RESET_WINDOW = 5.0
#: Seconds a gRPC channel connected to the killed worker takes to notice and reconnect to a live one: a call
#: sent meanwhile fails UNAVAILABLE (gRPC does not retry a call that was sent on a broken connection).
GRPC_RECONNECT = 5.0
#: Seconds after PostgreSQL is back within which a request that began while it was down may still fail.
DATABASE_SLACK = 2.0


class Rule(Protocol):
    def describe(self, origin: float) -> str: ...

    def explains(self, request: Request, tracebacks: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True)
class WorkerKilled:
    """A uvicorn worker killed with SIGKILL: the requests it had in flight lose their connection."""

    at: float
    pid: int

    def describe(self, origin: float) -> str:
        t = self.at - origin
        return (
            f"connection reset or closed: in flight on uvicorn worker {self.pid}, SIGKILLed at t={t:.1f} s "
            f"(sent by t+{SENT_SLACK:g} s, failed by t+{RESET_WINDOW:g} s); or gRPC UNAVAILABLE of a call sent "
            f"by t+{GRPC_RECONNECT:g} s on a channel to it"
        )

    def explains(self, request: Request, tracebacks: Mapping[str, str]) -> bool:
        outcome = request.outcome.label
        if outcome.startswith("transport "):
            return request.started <= self.at + SENT_SLACK and self.at <= request.ended <= self.at + RESET_WINDOW
        if outcome == "gRPC UNAVAILABLE":
            return request.started <= self.at + GRPC_RECONNECT and request.ended >= self.at
        return False


@dataclass(frozen=True)
class ModelProcessKilled:
    """A model's worker process killed with SIGKILL: the call it had fails with a 500 naming it."""

    at: float
    pid: int
    model: str

    def describe(self, origin: float) -> str:
        return (
            f"500 (or a stream's error event) whose error id the server logged as {self.model}'s worker process "
            f"{self.pid} 'killed by SIGKILL': its call in flight when it was killed at t={self.at - origin:.1f} s"
        )

    def explains(self, request: Request, tracebacks: Mapping[str, str]) -> bool:
        outcome = request.outcome
        return (
            outcome.label in ("HTTP 500", "stream error event")
            and names_killed(tracebacks.get(outcome.error_id or "", ""), self.pid)
            and request.started <= self.at <= request.ended
        )


def names_killed(logged: str, pid: int) -> bool:
    """Whether what the server logged of a failure says that the worker process ``pid`` was killed."""
    return f"(pid {pid}) was killed by SIGKILL" in logged


@dataclass(frozen=True)
class DatabaseDown:
    """PostgreSQL stopped: a jobs route that needs the database answers 503 "the jobs database cannot be reached"
    (with Retry-After: the client tries again)."""

    down: float
    up: float

    def describe(self, origin: float) -> str:
        return (
            f"503 'the jobs database cannot be reached' from a jobs route while PostgreSQL was down "
            f"(t={self.down - origin:.1f} to {self.up - origin:.1f} s, +{DATABASE_SLACK:g} s)"
        )

    def explains(self, request: Request, tracebacks: Mapping[str, str]) -> bool:
        outcome = request.outcome
        return (
            request.kind == JOBS
            and outcome.label == "HTTP 503"
            and "jobs database cannot be reached" in outcome.detail
            and request.started <= self.up + DATABASE_SLACK
            and request.ended >= self.down
        )


@dataclass(frozen=True)
class BurstOverflow:
    """A burst past a model's queue: the requests beyond its threads and queue are refused at once."""

    route: str
    model: str
    at: float

    def describe(self, origin: float) -> str:
        return (
            f"503 'try again shortly' from {self.model}, its queue full, during the burst at t={self.at - origin:.1f} s"
        )

    def explains(self, request: Request, tracebacks: Mapping[str, str]) -> bool:
        outcome = request.outcome
        return (
            request.route == self.route
            and outcome.label == "HTTP 503"
            and "inferences running or waiting" in outcome.detail
            and request.started >= self.at
        )


def cause(request: Request, rules: Sequence[Rule], tracebacks: Mapping[str, str], origin: float) -> str | None:
    """The first rule that explains the request's failure, described; None if none does."""
    for rule in rules:
        if rule.explains(request, tracebacks):
            return rule.describe(origin)
    return None
