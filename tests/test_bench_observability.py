"""The benchmark's observability parts (issue 27), against real servers: the OTLP receiver ``ours-tracing``
exports to, the statistics breakdown read around each load, and the report's cost lines."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.loadbench import breakdown
from benchmarks.loadbench.report import OBSERVABILITY, cost_line, observability_lines
from stevedore_server.kit.loopback import free_ports
from tests.venvs import Server

SINK = Path(__file__).resolve().parent.parent / "benchmarks" / "servers" / "otlp_sink.py"


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, "the receiver exited"
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def test_otlp_sink_counts_every_span_the_sdk_exports(tmp_path: Path) -> None:
    """What the OpenTelemetry SDK exports over OTLP gRPC arrives, span for span, and is counted at SIGTERM."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    port = free_ports(1)[0]
    counts = tmp_path / "counts.json"
    command = [sys.executable, str(SINK), "--port", str(port), "--counts", str(counts)]
    with (tmp_path / "sink.log").open("wb") as log:
        sink = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, sink)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}")))
        tracer = provider.get_tracer("bench-test")
        for _ in range(321):
            with tracer.start_as_current_span("request"), tracer.start_as_current_span("model"):
                pass
        provider.shutdown()  # exports what is queued
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=30)
    received = json.loads(counts.read_text())
    assert received["spans"] == 642
    assert received["exports"] >= 1


def predicted(server: Server, requests: int) -> dict[str, Any]:
    """The breakdown's fields for ``requests`` one-row predicts of iris, read around them."""
    before = breakdown.read(server.url, "iris")
    assert isinstance(before, dict), before
    for _ in range(requests):
        answer = httpx.post(f"{server.url}/models/iris/predict", json=[[5.1, 3.5, 1.4, 0.2]], timeout=30)
        assert answer.status_code == 200, answer.text
    return breakdown.between(before, breakdown.read(server.url, "iris"))


def test_breakdown_splits_a_real_servers_requests(example_server: Server) -> None:
    """Read around predicts, the statistics give each stage's mean a request (as much for 20 as for 2), one row
    a call; an unknown model is told apart from a server without the extension."""
    few, many = predicted(example_server, 2), predicted(example_server, 20)
    assert many["server_stats_note"] is None
    assert many["server_rows_per_call"] == 1.0
    assert many["server_compute_infer_us"] > 0
    assert many["server_success_us"] < 4 * few["server_success_us"]  # a mean, not a sum
    stages = sum(many[f"server_{stage}_us"] for stage in breakdown.STAGES)
    assert 0 < stages <= many["server_success_us"] + 0.5  # rounding to 0.1 µs per stage
    assert breakdown.read(example_server.url, "no-such-model") == "no model 'no-such-model' (404)"


@pytest.fixture
def server_without_statistics() -> Iterator[str]:
    """A real HTTP server on loopback that answers 404 to everything, as a build without the extension does."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the handler's method name
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:  # quiet (the base class's signature)
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_breakdown_notes_a_server_without_the_extension(server_without_statistics: str) -> None:
    note = breakdown.read(server_without_statistics, "iris")
    assert note == breakdown.NOT_IMPLEMENTED
    fields = breakdown.between(note, note)
    assert fields["server_stats_note"] == breakdown.NOT_IMPLEMENTED and fields["server_success_us"] is None
    records = [{"kind": "result", "target": "ours-stevedore", "scenario": "small-c32", **fields}]
    assert breakdown.NOT_IMPLEMENTED in breakdown.breakdown_text(records)


def summary(target: str, rps: float, cpu: float) -> dict[str, Any]:
    return {"scenario": "small-c32", "target": target, "rps": rps, "mean_ms": 10.0, "rps_spread_pct": 3.0,
            "cpu_us_per_request": cpu}  # fmt: skip


def test_cost_lines_hold_each_observed_target_to_its_bound() -> None:
    """2 % for tracing off, 15 % for tracing on at small-c32, 10 % for the payload log: 0.97x is over the first
    only, 0.80x over every one."""
    tracing_off, tracing_on, payload_log = OBSERVABILITY
    base = summary("ours-stevedore", 1000.0, 400.0)
    assert cost_line(tracing_off, "small-c32", summary("ours-stevedore", 970.0, 410.0), base).endswith(
        "OVER the bound of 2%"
    )
    assert cost_line(tracing_on, "small-c32", summary("ours-tracing", 970.0, 410.0), base).endswith(
        "within the bound of 15%"
    )
    assert cost_line(payload_log, "small-c32", summary("ours-payload-log", 800.0, 500.0), base).endswith(
        "OVER the bound of 10%"
    )
    assert "bound" not in cost_line(tracing_on, "batch1000-c4", summary("ours-tracing", 800.0, 500.0), base)
    rows = [summary("ours-no-otel", 1000.0, 400.0), summary("ours-stevedore", 990.0, 402.0)]
    lines = observability_lines(rows)
    assert "ours-stevedore 990.0 / ours-no-otel 1,000.0 req/s = 0.990x" in lines[1]
    assert "server CPU 402 / 400 µs a request" in lines[1]
