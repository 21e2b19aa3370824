"""A real OTLP trace receiver for the tests: gRPC ``TraceService/Export`` and HTTP ``POST /v1/traces``.

The OpenTelemetry Collector does not install here; this receiver speaks the same wire format, from the published
OTLP protobufs (``opentelemetry-proto``), on loopback ports of its own. Start one with ``Receiver()`` as a context
manager (or the ``otlp`` fixture of the tracing tests), point a server at it with ``receiver.environment()``, then
``receiver.wait_for(count)`` and ``receiver.tree(trace_id)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from stevedore_server.kit.loopback import free_ports

#: The span kinds of OTLP (``Span.SpanKind``), by number.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Event:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One span as the receiver got it, ids in hex (``parent_id`` is ``""`` for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    attributes: dict[str, Any]
    links: tuple[Link, ...]
    events: tuple[Event, ...]
    status: str
    start_ns: int
    end_ns: int
    #: The resource of the process that sent it (``service.name``...).
    resource: dict[str, Any]
    #: "grpc" or "http": the wire it came on.
    transport: str

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", ""))


def value(any_value: common_pb2.AnyValue) -> Any:
    """An OTLP attribute value as Python's."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(one) for one in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind) if kind else None


def attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> list[Span]:
    """The spans of one export request."""
    found = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for one in scope_spans.spans:
                found.append(
                    Span(
                        name=one.name,
                        trace_id=one.trace_id.hex(),
                        span_id=one.span_id.hex(),
                        parent_id=one.parent_span_id.hex(),
                        kind=KINDS.get(one.kind, str(one.kind)),
                        attributes=attributes(one.attributes),
                        links=tuple(
                            Link(link.trace_id.hex(), link.span_id.hex(), attributes(link.attributes))
                            for link in one.links
                        ),
                        events=tuple(Event(event.name, attributes(event.attributes)) for event in one.events),
                        status=STATUS.get(one.status.code, str(one.status.code)),
                        start_ns=one.start_time_unix_nano,
                        end_ns=one.end_time_unix_nano,
                        resource=resource,
                        transport=transport,
                    )
                )
    return found


@dataclass
class Receiver:
    """An OTLP receiver on loopback: gRPC on ``grpc_port``, HTTP on ``http_port``.

    ``delay`` holds each export that long before answering (a slow collector: the sender's queue fills);
    ``refuse`` answers every export UNAVAILABLE (gRPC) or 503 (HTTP).
    """

    # ``received`` runs on the servers' threads; ``spans`` and ``exports`` change under ``changed``.

    delay: float = 0.0
    refuse: bool = False
    #: Ports to listen on (0: free ones): a receiver can come up where a server was told a collector is.
    grpc_port: int = 0
    http_port: int = 0
    spans: list[Span] = field(default_factory=list)
    exports: int = 0

    def __post_init__(self) -> None:
        free_grpc, free_http = free_ports(2)
        self.grpc_port, self.http_port = self.grpc_port or free_grpc, self.http_port or free_http
        self.changed = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- serving

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_GrpcService(self), self._grpc)
        self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self._grpc.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), _http_handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def received(self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.changed:
            self.exports += 1
            self.spans.extend(spans_of(request, transport))
            self.changed.notify_all()

    def environment(self, protocol: str = "grpc", **extra: str) -> dict[str, str]:
        """The ``OTEL_*`` variables that send a process's spans here, quickly (a short batch delay)."""
        endpoint = f"http://127.0.0.1:{self.grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{self.http_port}"
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "STEVEDORE_TRACING": "true",
            **extra,
        }

    # -- reading

    def wait(self, condition: Callable[[list[Span]], bool], awaited: str, deadline: float = 30.0) -> list[Span]:
        """The spans received once ``condition`` holds of them; an AssertionError naming ``awaited`` after
        ``deadline`` seconds."""
        end = time.monotonic() + deadline
        with self.changed:
            while not condition(self.spans):
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {awaited} after {deadline}s; received:\n{render(self.spans)}")
                self.changed.wait(left)
            return list(self.spans)

    def wait_for(self, count: int, deadline: float = 30.0) -> list[Span]:
        """The spans received, once there are at least ``count``."""
        return self.wait(lambda spans: len(spans) >= count, f"{count} spans", deadline)

    def spans_now(self) -> list[Span]:
        """The spans received so far."""
        with self.changed:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self.changed:
            return [one for one in self.spans if one.trace_id == trace_id]

    def named(self, name: str) -> list[Span]:
        with self.changed:
            return [one for one in self.spans if one.name == name]

    def tree(self, trace_id: str) -> Node:
        """The span tree of one trace (its root: the span without a parent among those received)."""
        return tree(self.trace(trace_id))

    def clear(self) -> None:
        with self.changed:
            self.spans.clear()


@dataclass
class Node:
    span: Span
    children: list[Node] = field(default_factory=list)

    def names(self) -> Any:
        """The tree as nested names: ``("POST /predict", [("decode", []), ...])``, children in start order."""
        return (self.span.name, [child.names() for child in self.children])

    def find(self, name: str) -> Node:
        """The first node named ``name`` in this tree, depth first."""
        if self.span.name == name:
            return self
        for child in self.children:
            with_name = child.find_or_none(name)
            if with_name is not None:
                return with_name
        raise AssertionError(f"no span {name!r} in:\n{render_node(self)}")

    def find_or_none(self, name: str) -> Node | None:
        try:
            return self.find(name)
        except AssertionError:
            return None


def tree(spans: list[Span]) -> Node:
    """The tree of ``spans`` (one trace): exactly one root is expected."""
    nodes = {one.span_id: Node(one) for one in spans}
    roots = []
    for node in sorted(nodes.values(), key=lambda node: node.span.start_ns):
        parent = nodes.get(node.span.parent_id)
        (parent.children if parent else roots).append(node)
    if len(roots) != 1:
        raise AssertionError(f"{len(roots)} roots in trace:\n" + "\n".join(flat(spans)))
    return roots[0]


def flat(spans: list[Span]) -> list[str]:
    """Spans as lines naming each one's parent: for a trace that is no single tree."""
    return [f"  {one.name} (span {one.span_id}, parent {one.parent_id or '-'})" for one in spans]


def render_node(node: Node, depth: int = 0) -> str:
    """A tree as indented lines: name, kind, key attributes, links and events."""
    one = node.span
    shown = {key: item for key, item in one.attributes.items() if key.startswith(("stevedore.", "http.", "rpc."))}
    line = f"{'  ' * depth}{one.name} [{one.kind}, {one.service}, span {one.span_id}] {shown}"
    if one.links:
        line += f" links={[link.span_id for link in one.links]}"
    if one.events:
        line += f" events={[event.name for event in one.events]}"
    return "\n".join([line, *(render_node(child, depth + 1) for child in node.children)])


def render(spans: list[Span]) -> str:
    """Every trace among ``spans`` as indented trees (or a flat list where a trace has no single root)."""
    lines = []
    for trace_id in dict.fromkeys(one.trace_id for one in spans):
        in_trace = [one for one in spans if one.trace_id == trace_id]
        lines.append(f"trace {trace_id}")
        try:
            lines.append(render_node(tree(in_trace), 1))
        except AssertionError:
            lines.extend(flat(in_trace))
    return "\n".join(lines) or "(nothing)"


class _GrpcService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(  # the RPC's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self.receiver.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refusing, as the test asked")
        self.receiver.received(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            if receiver.refuse:
                self.send_error(503)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.received(request, "http")
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # http.server's name
            pass

    return Handler
