"""The payload log: each inference's request and response handed to the ``stevedore_inference_logged`` hook, off
the request path.

    exchange = server.payload_log.begin(model.name, model.version)  # None: not recorded
    exchange.request = read_request                                   # a function giving its JSON value
    exchange.response = read_response                                 # once written
    exchange.answered(route, "http", status, ok, seconds, request_id)             # at the protocol's edge

A front end begins an exchange for an inference (``begin`` says whether this
one is recorded: the log is on, the model not left out, the sample drawn),
notes its response, and the protocol's edge hands it over once the answer is
sent. The bodies are noted as they are (bytes, messages, values) and turned
into JSON, redacted and recorded by one daemon thread, which calls the hook:
the request path only puts the exchange in a bounded queue. The thread wakes
once for what comes within ``LINGER`` and hands it over together (the hook's
``more``: a sink may write it all at once): under load, a thread woken and a
file written for each record cost the serving thread more than the records
themselves (each wake-up and each write hands the GIL over). A full queue (in
records, or in the bytes of the bodies it holds) drops the record and counts it
(``stevedore_payload_log_dropped_total``, reason ``queue_full``), as does an
implementation that raises (``sink_error``, its first failure logged, not every
one; a ``SinkFailure`` says how many records it lost). At shutdown the queue is
drained within a bound; what is still queued then, or comes after, is counted
(``shutdown``).
"""

from __future__ import annotations

import collections
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from stevedore_server.base.errors import SinkFailure
from stevedore_server.base.inference_records import REQUEST, RESPONSE, InferenceRecord
from stevedore_server.base.redaction import Pointer, parse_pointers, redacted
from stevedore_server.base.serialization import dumps

if TYPE_CHECKING:
    from stevedore_server.base.metrics import Metrics
    from stevedore_server.base.settings import Settings
    from stevedore_server.plugins.hooks import Hooks
    from stevedore_server.plugins.host import Server

logger = logging.getLogger("stevedore.payload_log")

#: Records waiting for the hook: past this, new ones are dropped, never a request held up.
QUEUE_SIZE = 1000
#: Bytes of bodies the records waiting for the hook (and those in its hands) may hold: each may hold a body of
#: ``max_body_size`` (16 MiB by default), so a count of records alone would let a slow sink hold gigabytes.
#: Past it, new records are dropped (``queue_full``). Four bodies of the largest size fit.
QUEUE_BYTES = 64 << 20
#: Bytes of events a stream's record keeps (``RecordedItems``): a stream may send far more than any body, for
#: as long as it runs. Past it, the record's items end with ``TRUNCATED``.
STREAM_BYTES = 16 << 20
#: The last item of a stream's record cut at ``STREAM_BYTES``.
TRUNCATED = {"truncated": f"the stream's later items are not recorded (past {STREAM_BYTES} bytes)"}
#: Seconds the thread waits, once woken, for more records to hand over with the first (see the module).
LINGER = 0.02
#: Seconds the queue gets at shutdown to be handed over; what is left is counted as dropped.
DRAIN_TIMEOUT = 10.0
#: The module the built-in sinks are registered under (``plugins.builtin.payload_log``): with no sink set, it
#: records nothing, so it alone does not turn the log on.
BUILT_IN = "stevedore_server.plugins.builtin.payload_log"
#: Why a record was dropped: the label values of ``stevedore_payload_log_dropped_total``.
QUEUE_FULL, SINK_ERROR, SHUTDOWN, UNREADABLE = "queue_full", "sink_error", "shutdown", "unreadable"
DROP_REASONS = (QUEUE_FULL, SINK_ERROR, SHUTDOWN, UNREADABLE)

#: A body as noted on the request path, made into its JSON value by the log's thread.
Body = Callable[[], Any]


@dataclass
class Exchange:
    """One inference as its front end sees it, filled in as it goes (the response once written), then handed
    over at the protocol's edge with how it ended. Mutable: the route and the edge fill in its parts."""

    log: PayloadLog
    model: str
    version: str
    request: Body | None = None
    response: Body | None = None
    #: Set by ``answered``: the record's route, protocol, status, whether it succeeded, seconds and request id.
    outcome: tuple[str, str, int, bool, float, str] | None = None
    #: When the request came (seconds since the epoch): the edge's clock, which started with the request.
    started: float = 0.0
    #: Bytes its bodies hold while queued (``held_bytes``), set when it is.
    size: int = 0

    def answered(self, route: str, protocol: str, status: int, ok: bool, seconds: float, request_id: str) -> None:
        """The answer is sent, ``seconds`` after the request came: queue the exchange for the log's thread
        (dropped, and counted, when full)."""
        self.outcome = (route, protocol, status, ok, seconds, request_id)
        self.started = time.time() - seconds
        self.log.submit(self)


class PayloadLog:
    """The payload log of one server: which inferences it records, its queue and the thread that hands the
    records to the hook (see the module)."""

    def __init__(self, settings: Settings, hooks: Hooks | None, server: Server, metrics: Metrics | None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.server = server
        self.metrics = metrics
        loggers = hooks.inference_loggers() if hooks is not None else []
        # Without hooks (a server made by hand, as tests do) there is nothing to hand a record to.
        self.on = hooks is not None and (settings.payload_log is not None or any(n != BUILT_IN for n in loggers))
        self.sample = settings.payload_log_sample
        self.mode = settings.payload_log_mode
        self.pointers: tuple[Pointer, ...] = parse_pointers(settings.payload_log_redact)
        self.left_out = frozenset(name for name, table in settings.models.items() if table.payload_log is False)
        #: What waits for the thread (at most ``QUEUE_SIZE``), and its wake-up: set when a record comes to a thread
        #: that may be waiting (a deque and an event cost the request path less than ``queue.Queue``'s locks).
        self.pending: collections.deque[Exchange] = collections.deque()
        self.wake = threading.Event()
        self.random = random.Random()
        self.thread: threading.Thread | None = None
        #: Held to queue a record and to close the log (see ``submit``), and to count the bytes queued.
        self.lock = threading.Lock()
        self.closed = False
        #: Bytes the queued records' bodies hold (at most ``QUEUE_BYTES``), until the thread is done with them.
        self.queued_bytes = 0
        #: Plugins whose last call raised: their next failures are counted, not logged.
        self.failing: set[str] = set()
        #: Set at shutdown when the thread did not finish in time: what it hands over after is not counted twice.
        self.abandoned = False
        #: Records the thread has taken from ``pending`` and not handed over yet.
        self.in_hand = 0
        self.unreadable_logged = False

    def begin(self, model: str, version: str) -> Exchange | None:
        """An exchange for an inference of ``model`` if this one is recorded, else None (the log is off, the
        model left out, or the sample not drawn): the check a route makes on every inference, so cheap."""
        if not self.on or model in self.left_out:
            return None
        if self.sample < 1.0 and self.random.random() >= self.sample:
            return None
        return Exchange(self, model, version)

    def submit(self, exchange: Exchange) -> None:
        """Queue ``exchange`` for the thread, or count it dropped: the queue full (in records or bytes), or the
        log closed. Under the lock ``close`` takes, so that no record is appended after the thread has finished."""
        size = held_bytes(exchange.request) + held_bytes(exchange.response)
        with self.lock:
            if self.closed:
                reason: str | None = SHUTDOWN
            elif len(self.pending) >= QUEUE_SIZE or self.queued_bytes + size > QUEUE_BYTES:
                reason = QUEUE_FULL
            else:
                reason = None
                exchange.size = size
                self.queued_bytes += size
                self.pending.append(exchange)
                if self.thread is None:
                    self.start()
        if reason is not None:
            self.dropped(reason)
        elif not self.wake.is_set():  # after the append: a thread clearing it now still finds the record
            self.wake.set()

    def start(self) -> None:
        """The thread, started with the first record (a server that records nothing, or only checks its models
        as ``stevedore-server check`` does, never has one). Called with the lock held."""
        self.thread = threading.Thread(target=self.run, name="stevedore-payload-log", daemon=True)
        self.thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Hand over what is queued within ``timeout`` seconds (``DRAIN_TIMEOUT``, or ``graceful_timeout`` if
        shorter); count what is left, and what comes after, as dropped (``shutdown``)."""
        if timeout is None:
            timeout = min(DRAIN_TIMEOUT, self.settings.graceful_timeout)
        with self.lock:  # a record submitted meanwhile is either queued before this or dropped after
            self.closed = True
            thread = self.thread
        if thread is None:
            return
        self.wake.set()  # the thread hands over what is left, then stops
        thread.join(timeout)
        if thread.is_alive():
            self.abandon()

    def abandon(self) -> None:
        """The thread is still handing over when the server stops: count the rest as dropped, and say so."""
        self.abandoned = True
        left = self.in_hand
        while self.pending:
            self.pending.popleft()
            left += 1
        for _ in range(left):
            self.dropped(SHUTDOWN)
        if left:
            logger.warning("payload log: %d records not handed over at shutdown (a sink too slow or down)", left)

    def run(self) -> None:
        while not (self.closed and not self.pending):
            self.wake.wait(LINGER if self.closed else None)  # closed: a record that raced it is not waited for
            if not self.closed:
                time.sleep(LINGER)  # what comes meanwhile is handed over with this (see the module)
            self.wake.clear()
            taken = self.take()
            self.hand_over_all(taken)
            with self.lock:
                self.queued_bytes -= sum(exchange.size for exchange in taken)

    def take(self) -> list[Exchange]:
        """What is pending, oldest first, taken out of the queue (records that come meanwhile stay for the next)."""
        taken = []
        pending = self.pending
        try:
            for _ in range(len(pending)):
                taken.append(pending.popleft())
        except IndexError:  # emptied by ``abandon`` at shutdown meanwhile
            pass
        self.in_hand = len(taken)
        return taken

    def hand_over_all(self, exchanges: list[Exchange]) -> None:
        records = [record for record in map(self.record, exchanges) if record is not None]
        self.in_hand = len(records)
        last = len(records) - 1
        for index, record in enumerate(records):
            if self.abandoned:  # counted as dropped by ``abandon``: not handed over after all
                return
            self.hand_over(record, index < last)
            self.in_hand -= 1

    def hand_over(self, record: InferenceRecord, more: bool = False) -> None:
        if self.hooks is None:
            return
        failures = self.hooks.inference_logged(record, self.server, more)
        if self.abandoned:
            return
        for plugin, error in failures:
            # A sink that held records and lost them all with this one says how many (``SinkFailure.records``).
            self.dropped(SINK_ERROR, error.records if isinstance(error, SinkFailure) else 1)
            if plugin not in self.failing:
                self.failing.add(plugin)
                logger.error(
                    "payload log: %s failed to record an inference (%s: %s); its next failures are counted in "
                    "stevedore_payload_log_dropped_total, not logged", plugin, type(error).__name__, error,
                )  # fmt: skip
        recovered = self.failing - {plugin for plugin, _ in failures}
        for plugin in recovered:
            self.failing.discard(plugin)
            logger.info("payload log: %s records inferences again", plugin)

    def record(self, exchange: Exchange) -> InferenceRecord | None:
        """The exchange as a record: its bodies made JSON and redacted, those ``payload_log_mode`` keeps."""
        if exchange.outcome is None:
            return None
        route, protocol, status, ok, seconds, request_id = exchange.outcome
        try:
            request, response, recorded = self.bodies(exchange, ok)
        except Exception as error:  # a body that cannot be read back: the record would be wrong, so it is dropped
            self.dropped(UNREADABLE)
            if not self.unreadable_logged:  # a client could send many: once, then counted
                self.unreadable_logged = True
                logger.warning(
                    "payload log: the bodies of request %s could not be read (%s: %s); the next such are counted "
                    "in stevedore_payload_log_dropped_total, not logged", request_id, type(error).__name__, error,
                )  # fmt: skip
            return None
        return InferenceRecord(
            request_id, exchange.model, exchange.version, route, protocol, status, ok, exchange.started, seconds,
            request, response, recorded,
        )  # fmt: skip

    def bodies(self, exchange: Exchange, ok: bool) -> tuple[Any, Any, tuple[str, ...]]:
        request = response = None
        recorded: list[str] = []
        if self.mode != RESPONSE and exchange.request is not None:
            request = redacted(exchange.request(), self.pointers)
            recorded.append(REQUEST)
        if self.mode != REQUEST and exchange.response is not None and ok:
            response = redacted(exchange.response(), self.pointers)
            recorded.append(RESPONSE)
        return request, response, tuple(recorded)

    def dropped(self, reason: str, records: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.payload_log_dropped.labels(reason).inc(records)


def held_bytes(body: Body | None) -> int:
    """About the bytes a noted body holds (what ``QUEUE_BYTES`` bounds): the bytes and text it was noted with, a
    gRPC message's encoded size, a stream's recorded events."""
    if not isinstance(body, functools.partial):
        return 0
    return sum(part_bytes(part) for part in body.args)


def part_bytes(part: Any) -> int:
    if isinstance(part, memoryview):
        return part.nbytes
    if isinstance(part, (bytes, bytearray, str)):
        return len(part)
    if isinstance(part, RecordedItems):
        return part.size
    byte_size = getattr(part, "ByteSize", None)  # a protobuf message (the gRPC front end's)
    return int(byte_size()) if callable(byte_size) else 0


class RecordedItems:
    """The items a stream sent, as its record keeps them: up to ``STREAM_BYTES`` of their events, then
    ``TRUNCATED`` and no more (a stream may run for hours)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        #: Bytes of the events of the items kept.
        self.size = 0
        self.truncated = False

    def add(self, item: Any, event_bytes: int) -> None:
        """``item``, whose event took ``event_bytes``, kept unless the record is full."""
        if self.truncated:
            return
        if self.size + event_bytes > STREAM_BYTES:
            self.truncated = True
            self.items.append(TRUNCATED)
            return
        self.size += event_bytes
        self.items.append(item)

    def value(self) -> Any:
        """The items kept as the client got them in JSON (NumPy arrays and all): on the log's thread."""
        return orjson.loads(dumps(self.items))
