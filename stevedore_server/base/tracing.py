"""OpenTelemetry tracing, off unless asked (``--tracing``), configured by the standard ``OTEL_*`` variables.

Every process that serves or runs a model calls ``configure`` once at its entry (the server and each uvicorn
worker, a model's worker process, a Ray replica and the ingress, a job's process). The rest of the server only
calls the functions below, which cost a module flag and a shared ``nullcontext`` while tracing is off, and never
import OpenTelemetry then (the ``otel`` extra may be missing).

Export never slows or fails a request: ended spans go to a bounded queue (``OTEL_BSP_MAX_QUEUE_SIZE``) that a
thread of the SDK drains into the OTLP exporter. A span that finds the queue full is dropped, and so is a batch
the collector did not take; both are counted (``count_drops``: the Prometheus counter
``stevedore_trace_spans_dropped_total``). An unreachable collector is logged once, when the first export fails,
and again once it is reached (the exporter's own per-export lines are quieted).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from stevedore_server.base.errors import ClientError, StartupError

logger = logging.getLogger("stevedore.tracing")

#: The tracer while tracing is on; ``None`` while it is off (every function below then returns at once).
_tracer: Any = None
_provider: Any = None
_exporter: _CountingExporter | None = None
_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()
_configure_lock = threading.Lock()
#: Called with a reason ("queue_full", "export_failed") and a count of spans dropped: set by the metrics.
_count_dropped: Callable[[str, int], None] | None = None
#: What the functions below call of OpenTelemetry, bound once by ``configure``: an import statement in a function
#: costs a microsecond, on every span of every request.
_api: Any = None
#: ``span``'s kinds by name, bound by ``configure``.
_kinds: dict[str, Any] = {}

#: What installs the extra.
INSTALL_HINT = "pip install 'stevedore-server[otel]'"
PROTOCOLS = ("grpc", "http/protobuf")
SPAN_KINDS = ("internal", "server", "client", "producer", "consumer")
#: The headers (HTTP) and metadata keys (gRPC) of W3C Trace Context a caller continues its trace with.
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
#: The SDK's loggers that speak once an export: quieted, as this module logs an unreachable collector once.
QUIETED_LOGGERS = ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal")


def active() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def configure(settings_tracing: bool, service: str = "stevedore-server") -> None:
    """Turn tracing on in this process when ``settings_tracing`` (the ``tracing`` setting) says so; once.

    ``service`` names the service unless ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` does. The
    sampler is ``OTEL_TRACES_SAMPLER`` (``parentbased_always_on`` by default), the exporter OTLP over
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` by default, or ``http/protobuf``) to ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    """
    global _tracer, _provider, _exporter, _api, _kinds
    if not settings_tracing:
        return
    with _configure_lock:
        if _tracer is not None:
            return
        _import_sdk()
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        _api = _bind()
        _kinds = {name: _api.SpanKind[name.upper()] for name in SPAN_KINDS}
        _exporter = _CountingExporter(_otlp_exporter())
        _provider = TracerProvider(resource=_resource(service), shutdown_on_exit=False)
        _provider.add_span_processor(_bounded_processor(_exporter))
        for name in QUIETED_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR if name.endswith("internal") else logging.CRITICAL)
        _tracer = trace.get_tracer("stevedore_server", tracer_provider=_provider)
        # Libraries that trace through the global API (a plugin's own spans) join the same traces.
        trace.set_tracer_provider(_provider)
        atexit.register(shutdown)


def _bind() -> types.SimpleNamespace:
    """The OpenTelemetry names the functions below call (once the extra is known to be installed)."""
    from opentelemetry import context, propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

    return types.SimpleNamespace(
        Context=Context, attach=context.attach, detach=context.detach, set_span_in_context=trace.set_span_in_context,
        get_current_span=trace.get_current_span, inject=propagate.inject, extract=propagate.extract, Link=Link,
        Span=Span, SpanContext=SpanContext, SpanKind=SpanKind, Status=Status, StatusCode=StatusCode,
    )  # fmt: skip


def require(settings_tracing: bool) -> None:
    """StartupError now, before any worker starts, where ``configure`` would fail: the extra missing, or an
    OTLP protocol this server does not speak."""
    if settings_tracing:
        _import_sdk()
        _otlp_exporter_class()


def _import_sdk() -> None:
    """StartupError unless OpenTelemetry's SDK (the ``otel`` extra) imports."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401  # only whether it imports
    except ImportError as error:
        raise StartupError(f"tracing is on but OpenTelemetry is not installed: {INSTALL_HINT}") from error


def shutdown() -> None:
    """Export what is queued and stop (at exit); quickly when the collector is down."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    if _exporter is not None and _exporter.unreachable:
        _exporter.shutdown()  # its retries would hold the exit for their timeout, for spans that cannot go
    provider.shutdown()


def count_drops(counter: Callable[[str, int], None] | None) -> None:
    """Have ``counter(reason, count)`` called for spans dropped: the metrics of this process set it."""
    global _count_dropped
    _count_dropped = counter


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: str = "internal",
    links: Sequence[Any] = (),
    record_errors: bool = True,
    root: bool = False,
    parent: Any = None,
) -> AbstractContextManager[Any]:
    """A span around the block, the current span while it runs; yields the span (``None`` while tracing is off).

    A child of ``parent`` (a span, or a carrier from another process) when given, else of the current span, or
    the root of a new trace (``root``). ``links`` are ``link()``'s answers (``None`` ones are left out). An
    exception leaving the block is recorded on the span and sets its status to error, unless ``record_errors``
    is false (a server span sets its status from the answer) or it is a client's mistake (``client_error``):
    that one only names its type (``error.type``), as its message may quote the client's data.
    """
    if _tracer is None:
        return _NULL
    context = _api.Context() if root else None
    if parent is not None:
        context = _context_of(parent)
    return _Current(name, attributes, _kinds[kind], links, record_errors, context)


def _context_of(parent: Any) -> Any:
    """The context whose current span is ``parent`` (a span, or W3C headers)."""
    if isinstance(parent, Mapping):
        return _api.extract(parent)
    return _api.set_span_in_context(parent)


def client_error(error: BaseException) -> bool:
    """Whether ``error`` is a client's mistake (a ClientError, or any with an HTTP ``status_code`` below 500):
    no failure of the server, and its message may quote the client's payload."""
    if isinstance(error, ClientError):
        return True
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and status < 500


def _failed_with(one: Any, error: BaseException) -> None:
    """Record ``error`` leaving the span ``one``: a server's failure with its message and status error, a
    client's mistake by its type only."""
    if client_error(error):
        one.set_attribute("error.type", type(error).__name__)
        return
    one.record_exception(error)
    one.set_status(_api.Status(_api.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


class _Current:
    """``span``'s context manager: the SDK's ``start_as_current_span`` without its two generator-based context
    managers (``use_span`` inside it), which cost more than the span itself on every stage of every request."""

    __slots__ = ("attributes", "context", "kind", "links", "name", "one", "record_errors", "token")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        kind: Any,
        links: Sequence[Any],
        errors: bool,
        parent: Any,
    ) -> None:
        self.name, self.attributes, self.kind, self.record_errors = name, attributes, kind, errors
        self.links, self.context = links, parent

    def __enter__(self) -> Any:
        links = [one for one in self.links if one is not None] if self.links else ()
        self.one = one = _tracer.start_span(
            self.name,
            context=self.context,
            kind=self.kind,
            attributes=self.attributes,
            links=links,
            record_exception=False,  # __exit__ records (``_failed_with``)
            set_status_on_exception=False,
        )
        self.token = _api.attach(_api.set_span_in_context(one))
        return one

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        one = self.one
        try:
            _api.detach(self.token)
            # As the SDK's use_span: an Exception (not a GeneratorExit or a cancellation) is the span's failure.
            if self.record_errors and isinstance(error, Exception) and one.is_recording():
                _failed_with(one, error)
        finally:
            one.end()


def detached(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span around the block that is not made current: for an async generator (a stream), whose steps run
    in its consumer's context, where attaching a context at one step and detaching it at another fails.
    Yields the span (``None`` while off), to which ``event`` adds events."""
    if _tracer is None:
        return _NULL
    return _detached(name, attributes)


@contextlib.contextmanager
def _detached(name: str, attributes: Mapping[str, Any] | None) -> Iterator[Any]:
    one = _tracer.start_span(name, attributes=attributes)
    try:
        yield one
    except (GeneratorExit, asyncio.CancelledError):  # its consumer stopped (a client gone): no failure
        one.add_event("closed early")
        raise
    except BaseException as error:
        _failed_with(one, error)
        raise
    finally:
        one.end()


def event(target: Any, name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Add the event ``name`` to the span ``target`` (``None``: nothing)."""
    if target is not None:
        target.add_event(name, attributes)


def record(
    name: str,
    start_ns: int,
    end_ns: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    parent: Any = None,
) -> None:
    """A span that already ended: a wait measured from ``start_ns`` (``time.time_ns``) to ``end_ns`` (now),
    such as a call's wait for a thread; a child of ``parent`` (a span, from ``current``) or the current span."""
    if _tracer is None:
        return
    context = None
    if parent is not None:
        context = _api.set_span_in_context(parent)
    one = _tracer.start_span(name, context=context, attributes=attributes, start_time=start_ns)
    one.end(end_time=end_ns)


def failed(target: Any, error_type: str) -> None:
    """Mark the span ``target`` failed (its status error, ``error.type``): an answer that says the server
    failed, where no exception left the span."""
    if target is None:
        return
    target.set_attribute("error.type", error_type)
    target.set_status(_api.Status(_api.StatusCode.ERROR))


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set ``attributes`` on the current span (the model's name and version on the request's server span)."""
    if _tracer is None:
        return
    _api.get_current_span().set_attributes(attributes)


def current() -> Any:
    """The current span, to link to or from later (a batch, from another task); ``None`` while off."""
    if _tracer is None:
        return None
    found = _api.get_current_span()
    return found if found.get_span_context().is_valid else None


def add_link(target: Any, to: Any) -> None:
    """Link the span ``target`` (a request waiting for its batch) to ``to`` (``link``'s targets); nothing when
    either is ``None`` or ``target`` has ended (a request that timed out: the SDK would warn)."""
    if target is None or to is None or not target.is_recording():
        return
    linked = link(to)
    if linked is not None:
        target.add_link(linked.context, linked.attributes)


def carrier() -> dict[str, str]:
    """The current context as W3C Trace Context headers (``traceparent``, ``tracestate``), for another process."""
    if _tracer is None:
        return {}
    headers: dict[str, str] = {}
    _api.inject(headers)
    return headers


def continued(carrier: Mapping[str, str] | None) -> AbstractContextManager[None]:
    """Run the block in the context ``carrier`` (W3C headers from another process or a client) brings."""
    if _tracer is None or not carrier:
        return _NULL
    return _attached(dict(carrier))


def within(target: Any) -> AbstractContextManager[None]:
    """Run the block with the span ``target`` current, starting none: work done for a request that is not
    sampled (a batch of such requests) stays out of the export, as that request's children."""
    if _tracer is None or target is None:
        return _NULL
    return _attached(target)


@contextlib.contextmanager
def _attached(parent: Any) -> Iterator[None]:
    token = _api.attach(_context_of(parent))
    try:
        yield
    finally:
        _api.detach(token)


def link(target: Any) -> Any:
    """A link to ``target`` (a carrier, a span or a span context) for a span that serves several (a batch);
    ``None`` while tracing is off or when ``target`` names no span."""
    if _tracer is None or target is None:
        return None
    if isinstance(target, Mapping):
        target = _api.get_current_span(_api.extract(target))
    if isinstance(target, _api.Span):
        target = target.get_span_context()
    if not isinstance(target, _api.SpanContext) or not target.is_valid:
        return None
    return _api.Link(target)


def sampled(target: Any) -> bool:
    """Whether the span ``target`` (``current``'s answer) is sampled: its trace is exported."""
    return target is not None and bool(target.get_span_context().trace_flags.sampled)


def carried(pairs: Iterable[tuple[str | bytes, Any]]) -> dict[str, str]:
    """The W3C Trace Context headers among ``pairs`` (HTTP headers as bytes, gRPC metadata as text)."""
    found: dict[str, str] = {}
    for key, value in pairs:
        name = key.decode("latin-1").lower() if isinstance(key, bytes) else key
        if name in TRACE_HEADERS:
            if isinstance(value, bytes):
                found[name] = value.decode("latin-1")
            elif isinstance(value, str):
                found[name] = value
    return found


def answered(target: Any, request_id: str, attributes: Mapping[str, Any], failure: str | None) -> None:
    """Set on the server span ``target`` what its answer says: ``attributes`` and the request's id; failed
    (``failure``: its ``error.type``) when the answer says the server failed, not for a client's mistake."""
    target.set_attributes(attributes)
    target.set_attribute("stevedore.request.id", request_id)
    if failure is not None:
        failed(target, failure)


def ids() -> tuple[str, str] | None:
    """The current trace id and span id, in hex, for log lines; ``None`` outside a span or while off."""
    if _tracer is None:
        return None
    context = _api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def exemplar() -> dict[str, str] | None:
    """The current trace and span ids as a Prometheus exemplar's labels; ``None`` outside a sampled span."""
    if _tracer is None:
        return None
    context = _api.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def _resource(service: str) -> Any:
    """The process's resource: ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``, else ``service``."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    class HashedOnce(Resource):
        """A resource whose hash is worked out once: the OTLP encoder groups spans by resource, hashing it for
        every span, and the SDK's hash writes the attributes out as JSON each time (a tenth of the export)."""

        def __hash__(self) -> int:
            hashed: int | None = self.__dict__.get("_hash")
            if hashed is None:
                hashed = self.__dict__["_hash"] = super().__hash__()
            return hashed

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    return HashedOnce(resource.attributes, resource.schema_url)


#: gRPC's reconnection back-off grows to two minutes: after a collector's outage, spans would wait that long to
#: flow again. Five seconds at most.
GRPC_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000))


def _otlp_exporter() -> Any:
    """The OTLP span exporter (it reads its endpoint, headers and timeout from the environment itself)."""
    exporter_class = _otlp_exporter_class()
    if exporter_class.__module__.startswith("opentelemetry.exporter.otlp.proto.grpc"):
        return exporter_class(channel_options=GRPC_CHANNEL_OPTIONS)
    return exporter_class()


def _otlp_exporter_class() -> Any:
    """The class of OTLP span exporter ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol not in PROTOCOLS:
        raise StartupError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use {' or '.join(PROTOCOLS)}")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        return HTTPSpanExporter
    except ImportError as error:
        raise StartupError(f"tracing is on but the OTLP exporter is not installed: {INSTALL_HINT}") from error


def _dropped(reason: str, count: int) -> None:
    if _count_dropped is not None and count:
        _count_dropped(reason, count)


def _endpoint() -> str:
    """Where spans go, for the one line that says the collector is unreachable."""
    return (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "the default OTLP endpoint"
    )


class _CountingExporter:
    """The OTLP exporter, counting the spans it could not deliver and saying once that the collector is down."""

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter
        self.unreachable = False
        #: Spans handed to the exporter: the bounded queue holds what was ended and not handed over yet.
        self.handed = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.handed += len(spans)
        try:
            result = self.exporter.export(spans)
        except Exception as error:  # an exporter's bug must not stop the export thread
            logger.warning("exporting %d spans failed: %r", len(spans), error)
            result = SpanExportResult.FAILURE
        self._note(result == SpanExportResult.SUCCESS, len(spans))
        return result

    def _note(self, delivered: bool, count: int) -> None:
        if delivered and self.unreachable:
            self.unreachable = False
            logger.info("the trace collector at %s takes spans again", _endpoint())
        elif not delivered:
            _dropped("export_failed", count)
            if not self.unreachable:
                self.unreachable = True
                logger.warning(
                    "cannot export spans to the trace collector at %s: spans are dropped until it answers "
                    "(counted in stevedore_trace_spans_dropped_total; logged once)",
                    _endpoint(),
                )

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.exporter.force_flush(timeout_millis))


def _bounded_processor(exporter: _CountingExporter) -> Any:
    """A ``BatchSpanProcessor`` that drops (and counts) the spans that find its queue full, newest first.

    The SDK's own queue drops the oldest span silently; this one keeps count of what is queued (ended minus
    handed to the exporter) and drops a span itself before the SDK's queue would overflow.
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class BoundedProcessor(BatchSpanProcessor):
        def __init__(self) -> None:
            self.capacity = _positive("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
            batch = min(_positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.capacity)
            super().__init__(exporter, max_queue_size=self.capacity, max_export_batch_size=batch)  # type: ignore[arg-type]
            self.ended = 0
            self.lock = threading.Lock()

        def on_end(self, span: Any) -> None:
            if not (span.context and span.context.trace_flags.sampled):
                return
            with self.lock:
                full = self.ended - exporter.handed >= self.capacity
                if not full:
                    self.ended += 1
            if full:
                _dropped("queue_full", 1)
                return
            super().on_end(span)

    return BoundedProcessor()


def _positive(variable: str, default: int) -> int:
    """The positive whole number in ``variable``; ``default`` (the SDK's) when unset or wrong."""
    try:
        value = int(os.environ.get(variable, default))
    except ValueError:
        return default
    return value if value > 0 else default
