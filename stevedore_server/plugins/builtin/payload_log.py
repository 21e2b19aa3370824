"""The built-in payload log sinks, chosen by ``payload_log``: CloudEvents over HTTP (an ``http://`` or ``https://``
URL), JSON lines to a file (``file:PATH``) or to standard output (``-``).

CloudEvents go as KServe's logger sends them (``pkg/logger/worker.go``), so a
consumer of KServe's payload logs takes ours unchanged: binary content mode
(the attributes in ``ce-*`` headers, the body the JSON payload itself,
``Content-Type: application/json``), one event of type
``org.kubeflow.serving.inference.request`` for the request and one of
``org.kubeflow.serving.inference.response`` for a successful response (KServe
logs no failed one), both with the request id as ``ce-id``; KServe's extension
attributes (``inferenceservicename``: the model's name, ``namespace``,
``component``, ``endpoint``, ``metadata``) and four of ours, which KServe's
logger does not send (``modelversion``, ``route``, ``status``, and
``recordedtime``: when the event was sent). A send is tried a few times with a
short time-out and a growing pause, then given up (the record is counted as
dropped: ``core.payload_log``).

A ``file:PATH`` must be one the server can append to: ``check_target`` says so
at startup, before any record would be dropped for it.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from stevedore_server.base.errors import SettingError, SinkFailure
from stevedore_server.base.inference_records import REQUEST, RESPONSE, InferenceRecord, timestamp
from stevedore_server.base.serialization import dumps
from stevedore_server.hookspecs import hookimpl

if TYPE_CHECKING:
    import httpx

    from stevedore_server.plugins.host import Server

#: KServe's event types (``CEInferenceRequest``, ``CEInferenceResponse``).
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
#: Seconds a sink gets to answer one event, attempts per event, and the first pause between two (doubled each
#: time): a sink that hangs holds the log's thread about 7 seconds an event at most, never a request.
TIMEOUT = 2.0
ATTEMPTS = 3
BACKOFF = 0.25
#: Bytes of lines the JSON lines sink holds at most before writing them (see ``JSONLines``).
HELD_BYTES = 1 << 16
#: Where Kubernetes tells a pod its namespace (KServe's ``ce-namespace``).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: KServe's component for a model server.
COMPONENT = "predictor"
#: What a ``ce-*`` header value may hold as it is: printable ASCII but space, ``"`` and ``%``, which are
#: percent-encoded with the rest (the CloudEvents HTTP binding, 3.1.3.2).
HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in ' "%')


class Sink(Protocol):
    def send(self, record: InferenceRecord, more: bool) -> None: ...


@hookimpl(trylast=True)
def stevedore_inference_logged(record: InferenceRecord, server: Server, more: bool) -> None:
    """The record to the sink ``payload_log`` names, if any (``more``: others follow at once)."""
    target = server.settings.payload_log
    if target is not None:
        sink_for(target, server.settings.port).send(record, more)


@functools.cache
def sink_for(target: str, port: int) -> Sink:
    """One sink a target, made at its first record and kept (an HTTP client's connections, a file's descriptor)."""
    if target == "-":
        return JSONLines(sys.stdout.fileno())
    if target.startswith("file:"):
        return JSONLines(open_for_appending(file_path(target)))
    return CloudEvents(target, f"http://{socket.gethostname()}:{port}/")


def check_target(target: str | None) -> None:
    """SettingError unless a ``file:PATH`` target can be appended to (opened so, which creates the file as its
    first record would): else the server would start and drop every record."""
    if target is None or not target.startswith("file:"):
        return
    path = file_path(target)
    try:
        os.close(open_for_appending(path))
    except OSError as error:
        raise SettingError(
            "payload_log", f"cannot append to {path}: {error.strerror} (its folder must exist and be writable)"
        ) from None


def file_path(target: str) -> Path:
    return Path(target.removeprefix("file:")).expanduser()


def open_for_appending(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


class JSONLines:
    """One JSON object a line, written whole lines at a time in one ``write`` to a descriptor opened for appending
    (so the workers of ``--workers N`` never interleave their lines). The lines of records that come together
    (``more``) are held and written at once, up to ``HELD_BYTES``: a write each would hand the GIL over each
    time, which costs the serving thread more than the write itself. A failed write loses the lines not written
    yet, each counted as a record dropped (``SinkFailure.records``)."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.lock = threading.Lock()
        self.held: list[bytes] = []
        self.held_bytes = 0

    def send(self, record: InferenceRecord, more: bool = False) -> None:
        line = dumps(record.as_dict())
        with self.lock:
            self.held.append(line)
            self.held_bytes += len(line) + 1
            if not more or self.held_bytes >= HELD_BYTES:
                self.write()

    def write(self) -> None:
        self.held.append(b"")  # the last line's newline
        lines = b"\n".join(self.held)
        self.held.clear()
        self.held_bytes = 0
        written = 0
        try:
            while written < len(lines):
                written += os.write(self.descriptor, lines[written:])
        except OSError as error:
            lost = lines.count(b"\n", written)  # the lines not written whole (a line ends with its newline)
            raise SinkFailure(f"JSON lines sink: {error.strerror or error}", records=lost) from error


class CloudEvents:
    """Each record's events POSTed to ``url`` in binary content mode (see the module)."""

    def __init__(self, url: str, source: str) -> None:
        import httpx  # here: a model's worker process loads this layer, and never sends an event

        self.url = url
        self.source = source
        self.client: httpx.Client = httpx.Client(timeout=TIMEOUT)
        self.transport_errors: tuple[type[Exception], ...] = (httpx.HTTPError,)
        self.namespace = namespace()

    def send(self, record: InferenceRecord, more: bool = False) -> None:
        if REQUEST in record.recorded:
            self.post(self.headers(record, REQUEST_TYPE, record.started), dumps(record.request))
        if RESPONSE in record.recorded:
            self.post(self.headers(record, RESPONSE_TYPE, record.answered), dumps(record.response))

    def headers(self, record: InferenceRecord, event_type: str, occurred: float) -> dict[str, str]:
        attributes = {
            "specversion": "1.0",
            "id": record.request_id,
            "type": event_type,
            "source": self.source,
            "time": timestamp(occurred),
            "recordedtime": timestamp(time.time()),
            "inferenceservicename": record.model,
            "namespace": self.namespace,
            "component": COMPONENT,
            "endpoint": "default",
            "metadata": "{}",
            "modelversion": record.version,
            "route": record.route,
            "status": str(record.status),
        }
        headers = {"ce-" + name: quote(value, safe=HEADER_SAFE) for name, value in attributes.items()}
        return {"content-type": "application/json", **headers}

    def post(self, headers: dict[str, str], content: bytes) -> None:
        """Tried ``ATTEMPTS`` times while the sink cannot be reached or answers 5xx or 429; SinkFailure then, or at
        once for any other refusal (a 4xx: sending it again would be refused again)."""
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(BACKOFF * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, content=content, headers=headers)
            except self.transport_errors as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.is_success:
                return
            problem = f"it answered {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break
        raise SinkFailure(f"CloudEvents sink {self.url}: {problem}")


def namespace() -> str:
    """The pod's namespace in Kubernetes; empty elsewhere."""
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        return ""
