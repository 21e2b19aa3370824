"""An OTLP trace receiver that accepts and discards: the collector the ``ours-tracing`` target exports to.

A real gRPC ``opentelemetry.proto.collector.trace.v1.TraceService`` on the published OTLP protobufs
(``opentelemetry-proto``), run in the benchmark's tools environment and started with the target: each export is
parsed, its spans counted, and answered with an empty ``ExportTraceServiceResponse`` (all accepted), as a
collector that keeps up does. On SIGTERM it writes what it received (``{"exports": N, "spans": M}``) to
``--counts``, so the run can tell that the spans really arrived.

    python otlp_sink.py --port PORT --counts FILE
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts exports and spans; keeps nothing else."""

    def __init__(self) -> None:
        self.exports = 0
        self.spans = 0
        self._lock = threading.Lock()

    def Export(  # the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self._lock:
            self.exports += 1
            self.spans += spans
        return trace_service_pb2.ExportTraceServiceResponse()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"exports": self.exports, "spans": self.spans}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--counts", type=Path, required=True)
    args = parser.parse_args()
    sink = Sink()
    # Two threads: the SDK's exporter sends one batch at a time from each server process.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stopping = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    print(f"otlp_sink: listening on 127.0.0.1:{args.port}", flush=True)
    stopping.wait()
    server.stop(grace=2).wait()
    counts = sink.counts()
    args.counts.write_text(json.dumps(counts) + "\n")
    print(f"otlp_sink: received {counts['spans']} spans in {counts['exports']} exports", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
