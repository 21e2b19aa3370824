"""One inference as the payload log records it: what the ``stevedore_inference_logged`` hook receives."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The parts of an exchange a record may hold (``payload_log_mode`` chooses; an error's answer is never one).
REQUEST = "request"
RESPONSE = "response"


@dataclass(frozen=True)
class InferenceRecord:
    """An inference once answered: which request, model and route, how it ended, and its bodies as JSON values.

    ``request`` and ``response`` are what the client sent and got, decoded as the route decoded them (the JSON
    of a JSON route; the Open Inference Protocol's JSON form of its tensors, binary data and gRPC messages
    included), with the ``payload_log_redact`` fields already redacted. ``recorded`` names which of the two the
    record holds: ``payload_log_mode`` may leave one out, and a failed inference has no response body (its
    ``status`` says how it failed).
    """

    request_id: str
    model: str
    version: str
    #: ``"POST /models/{name}/predict"`` (the method and route template), or the gRPC method's path.
    route: str
    #: ``"http"`` or ``"grpc"``.
    protocol: str
    #: The HTTP status, or the gRPC status code's number (0 is OK).
    status: int
    #: Whether the inference succeeded (a 2xx status, or gRPC's OK).
    ok: bool
    #: When the request came (seconds since the epoch) and how long its answer took (seconds).
    started: float
    seconds: float
    request: Any = None
    response: Any = None
    recorded: tuple[str, ...] = ()

    @property
    def answered(self) -> float:
        """When the answer was sent (seconds since the epoch)."""
        return self.started + self.seconds

    def as_dict(self) -> dict[str, Any]:
        """The record as one JSON object (a line of the JSON lines sinks); the bodies it holds, no others."""
        fields: dict[str, Any] = {
            "id": self.request_id,
            "time": timestamp(self.started),
            "model": self.model,
            "version": self.version,
            "route": self.route,
            "protocol": self.protocol,
            "status": self.status,
            "ok": self.ok,
            "duration_ms": round(self.seconds * 1000, 3),
        }
        if REQUEST in self.recorded:
            fields[REQUEST] = self.request
        if RESPONSE in self.recorded:
            fields[RESPONSE] = self.response
        return fields


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, to the microsecond (CloudEvents' ``time``), as ``datetime.isoformat`` writes it (no
    fraction on a whole second)."""
    fraction, whole = math.modf(seconds)  # rounded as datetime rounds it
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    text = second_text(int(whole))
    return f"{text}.{micros:06d}Z" if micros else f"{text}Z"


@functools.lru_cache(maxsize=4)
def second_text(whole: int) -> str:
    """A whole second since the epoch, to the second: the same for the many records of one second, so kept
    (formatting a datetime is most of what a JSON line's record costs to make)."""
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
