"""Traces of requests in the server's process (``--tracing``), as a real OTLP receiver gets them from a real server.

The receiver (``tests.otlp``) speaks OTLP over gRPC and over HTTP; the servers are real ``stevedore-server run``
processes serving the predictors of ``tests.traced``, talked to by real HTTP and gRPC clients.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from stevedore_server.kit.loopback import free_ports

from .documentation import block, page
from .helpers import record_distribution, wait_until
from .otlp import Node, Receiver, Span, render, render_node
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

PREDICTORS = {
    "traced": "tests.traced:Traced",
    "tracedbatch": "tests.traced:TracedBatch",
    "tracedstream": "tests.traced:TracedStream",
}
PREDICT = "POST /models/{name}/predict"
ROWS = [[1.0, 2.0], [3.0, 4.0]]
#: A caller's own trace: the server continues it.
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def serve(directory: Path, *args: str, **env: str) -> Server:
    """The real server of the environment running the tests, serving the tracing predictors, ready."""
    site = directory / "site"
    record_distribution(site, "stevedore-test-traced", PREDICTORS)
    options = ("--plugins", "stevedore-test-traced", *args)
    server = Server.start(
        Venv(Path(sys.prefix), ()), directory / "server.log", *options, PYTHONPATH=f"{REPO}:{site}", **env
    )
    try:
        server.wait_for("/readyz", deadline=120)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running(directory: Path, *args: str, **env: str) -> Iterator[Server]:
    server = serve(directory, *args, **env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server exporting over OTLP/gRPC, logging JSON lines."""
    with running(tmp_path_factory.mktemp("traced"), "--log-format", "json", **receiver.environment("grpc")) as server:
        yield server


def server_span(receiver: Receiver, name: str, request_id: str) -> Span:
    """The server span of the request ``request_id`` (its ``x-request-id``), once received."""

    def found(spans: list[Span]) -> bool:
        return any(one.name == name and one.attributes.get("stevedore.request.id") == request_id for one in spans)

    spans = receiver.wait(found, f"a span {name!r} of request {request_id}")
    return next(one for one in spans if one.attributes.get("stevedore.request.id") == request_id)


def tree_of(receiver: Receiver, root: Span, count: int) -> Node:
    """The tree of ``root``'s trace, once it holds ``count`` spans."""
    receiver.wait(lambda spans: sum(one.trace_id == root.trace_id for one in spans) >= count, f"{count} spans")
    return receiver.tree(root.trace_id)


def predict(server: Server, model: str, rows: Any = ROWS, **headers: str) -> httpx.Response:
    answer = httpx.post(f"{server.url}/models/{model}/predict", json=rows, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


# -- the span trees -----------------------------------------------------------------------------------------------


def test_a_predict_is_a_server_span_with_a_child_for_each_stage(traced: Server, receiver: Receiver) -> None:
    answer = predict(traced, "traced", **{"x-request-id": "tree-1"})
    assert answer.json()["predictions"] == [3.0, 7.0]
    root = server_span(receiver, PREDICT, "tree-1")
    tree = tree_of(receiver, root, 5)
    assert tree.names() == (PREDICT, [("validate", []), ("admission", []), ("model", []), ("encode", [])]), render_node(
        tree
    )
    assert root.kind == "server" and root.parent_id == "" and root.status == "unset"
    assert root.service == "stevedore-server"
    assert {key: root.attributes[key] for key in ("http.request.method", "http.route", "url.path")} == {
        "http.request.method": "POST",
        "http.route": "/models/{name}/predict",
        "url.path": "/models/traced/predict",
    }
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["server.address"] == "127.0.0.1"
    assert root.attributes["stevedore.model.name"] == "traced"
    assert root.attributes["stevedore.model.version"]
    # The caller learns the trace its request is in.
    assert answer.headers["traceparent"].split("-")[1:3] == [root.trace_id, root.span_id]
    # Stages follow one another: the model ran after its wait for a thread, and inside the request.
    admission, model = tree.find("admission").span, tree.find("model").span
    assert root.start_ns <= admission.start_ns <= admission.end_ns <= model.start_ns <= model.end_ns <= root.end_ns


def test_a_model_failure_marks_the_server_span_failed(traced: Server, receiver: Receiver) -> None:
    answer = httpx.post(
        f"{traced.url}/models/traced/predict", json=[[-1.0, 2.0]], headers={"x-request-id": "fail-1"}, timeout=30
    )
    assert answer.status_code == 500
    root = server_span(receiver, PREDICT, "fail-1")
    assert (root.status, root.attributes["error.type"], root.attributes["http.response.status_code"]) == (
        "error",
        "500",
        500,
    )
    model = tree_of(receiver, root, 4).find("model").span
    assert model.status == "error"
    (raised,) = [event for event in model.events if event.name == "exception"]
    assert raised.attributes["exception.type"] == "ValueError"
    assert raised.attributes["exception.message"] == "a negative row"


def test_a_client_error_is_no_server_failure(traced: Server, receiver: Receiver) -> None:
    answer = httpx.post(
        f"{traced.url}/models/traced/predict", json="not rows", headers={"x-request-id": "bad-1"}, timeout=30
    )
    assert answer.status_code in (400, 422)
    root = server_span(receiver, PREDICT, "bad-1")
    assert root.status == "unset" and "error.type" not in root.attributes


def test_a_client_errors_message_and_payload_stay_out_of_its_spans(traced: Server, receiver: Receiver) -> None:
    # The schema error quotes the client's row: payload_log_redact may forbid it leaving the server.
    answer = httpx.post(
        f"{traced.url}/models/traced/predict", json=[["SECRET-ROW"]], headers={"x-request-id": "leak-1"}, timeout=30
    )
    assert answer.status_code == 422 and "SECRET-ROW" in answer.text
    root = server_span(receiver, PREDICT, "leak-1")
    validate = tree_of(receiver, root, 2).find("validate").span
    assert (validate.status, validate.events, validate.attributes["error.type"]) == ("unset", (), "InvalidPayload")
    assert "SECRET-ROW" not in repr(receiver.trace(root.trace_id))


def test_a_v2_decode_error_marks_no_span_failed(traced: Server, receiver: Receiver) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 2], "data": ["SECRET-TENSOR"]}]}
    answer = httpx.post(f"{traced.url}/v2/models/traced/infer", json=body, headers={"x-request-id": "leak-2"})
    assert answer.status_code == 400, answer.text
    root = server_span(receiver, "POST /v2/models/{name}/infer", "leak-2")
    spans = receiver.wait(
        lambda spans: any(one.name == "decode" and one.trace_id == root.trace_id for one in spans), "decode"
    )
    in_trace = [one for one in spans if one.trace_id == root.trace_id]
    assert [(one.status, one.events) for one in in_trace] == [("unset", ())] * len(in_trace), render(in_trace)
    assert "SECRET-TENSOR" not in repr(in_trace)


def v2_request(server: Server, model: str) -> dict[str, Any]:
    metadata = httpx.get(f"{server.url}/v2/models/{model}", timeout=10).json()
    tensor = metadata["inputs"][0]
    return {"inputs": [{"name": tensor["name"], "datatype": tensor["datatype"], "shape": [2, 2], "data": [1, 2, 3, 4]}]}


def test_a_v2_infer_has_decode_and_encode_spans(traced: Server, receiver: Receiver) -> None:
    body = v2_request(traced, "traced")
    answer = httpx.post(f"{traced.url}/v2/models/traced/infer", json=body, headers={"x-request-id": "v2-1"}, timeout=30)
    assert answer.status_code == 200, answer.text
    root = server_span(receiver, "POST /v2/models/{name}/infer", "v2-1")
    tree = tree_of(receiver, root, 6)
    expected = [("decode", []), ("validate", []), ("admission", []), ("model", []), ("encode", [])]
    assert tree.names() == ("POST /v2/models/{name}/infer", expected), render_node(tree)
    assert root.attributes["http.route"] == "/v2/models/{name}/infer"
    assert root.attributes["stevedore.model.name"] == "traced"


def test_a_grpc_infer_is_an_rpc_server_span(traced: Server, receiver: Receiver) -> None:
    client = triton_grpc.InferenceServerClient(traced.grpc_target)
    metadata = client.get_model_metadata("traced", as_json=True)
    tensor = metadata["inputs"][0]
    given = triton_grpc.InferInput(tensor["name"], [2, 2], tensor["datatype"])
    given.set_data_from_numpy(np.array(ROWS, dtype=np.float64 if tensor["datatype"] == "FP64" else np.float32))
    result = client.infer("traced", [given], request_id="grpc-1", headers={"x-request-id": "grpc-1"})
    assert result.as_numpy(metadata["outputs"][0]["name"]).tolist() == [3.0, 7.0]
    name = "inference.GRPCInferenceService/ModelInfer"
    root = server_span(receiver, name, "grpc-1")
    tree = tree_of(receiver, root, 6)
    expected = [("decode", []), ("validate", []), ("admission", []), ("model", []), ("encode", [])]
    assert tree.names() == (name, expected), render_node(tree)
    assert root.kind == "server"
    assert {key: root.attributes[key] for key in ("rpc.system", "rpc.service", "rpc.method")} == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
    }
    assert root.attributes["rpc.grpc.status_code"] == 0
    assert root.attributes["stevedore.model.name"] == "traced"


def test_a_grpc_client_error_is_no_server_failure(traced: Server, receiver: Receiver) -> None:
    client = triton_grpc.InferenceServerClient(traced.grpc_target)
    with pytest.raises(Exception, match="no model"):
        client.get_model_metadata("nosuchmodel", headers={"x-request-id": "grpc-404"})
    root = server_span(receiver, "inference.GRPCInferenceService/ModelMetadata", "grpc-404")
    assert root.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert root.status == "unset"


def test_a_batch_is_one_span_linked_to_each_request_it_served(traced: Server, receiver: Receiver) -> None:
    ids = [f"batch-{index}" for index in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(lambda rid: predict(traced, "tracedbatch", [[1.0, 2.0]], **{"x-request-id": rid}), ids))
    assert [answer.json()["predictions"] for answer in answers] == [[3.0]] * 4
    requests = {server_span(receiver, PREDICT, rid).span_id: rid for rid in ids}
    spans = receiver.wait(
        lambda spans: sum(one.attributes.get("stevedore.batch.size", 0) for one in batches_of(spans, requests)) == 4,
        "batch spans linking all four requests",
    )
    batches = batches_of(spans, requests)
    assert max(one.attributes["stevedore.batch.size"] for one in batches) >= 2  # sent together, they met
    for batch in batches:
        # In the trace of the first request it served, linked to every one, its size their number.
        assert batch.parent_id == batch.links[0].span_id and batch.trace_id == batch.links[0].trace_id
        assert batch.attributes["stevedore.batch.size"] == len(batch.links) == batch.attributes["stevedore.batch.rows"]
        assert batch.attributes["stevedore.model.name"] == "tracedbatch"
        receiver.wait(lambda spans, of=batch.span_id: sum(one.parent_id == of for one in spans) >= 2, "its children")
        children = sorted(one.name for one in receiver.trace(batch.trace_id) if one.parent_id == batch.span_id)
        assert children == ["admission", "model"]
        for link in batch.links:
            request = next(one for one in spans if one.span_id == link.span_id)
            # Each request links back to its batch, and its wait for the batch is its "admission" span.
            assert [(back.trace_id, back.span_id) for back in request.links] == [(batch.trace_id, batch.span_id)]
            stages = sorted(one.name for one in receiver.trace(request.trace_id) if one.parent_id == request.span_id)
            assert stages == sorted(
                ["validate", "admission", "encode"] + (["batch"] if request.span_id == batch.parent_id else [])
            )
    print(
        "a batched request, as the receiver got it:\n"
        + render([one for one in spans if trace_of_batch(one, batches, spans)])
    )


def traceparent(sampled: bool) -> tuple[str, str]:
    """A caller's ``traceparent``, its sampled flag set or not, and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}", trace_id


def send_together(server: Server, headers: list[str]) -> None:
    """A batched predict for each ``traceparent`` of ``headers``, sent at once: they meet in a batch."""
    with concurrent.futures.ThreadPoolExecutor(len(headers)) as pool:
        answers = list(
            pool.map(lambda header: predict(server, "tracedbatch", [[1.0, 2.0]], traceparent=header), headers)
        )
    assert [answer.json()["predictions"] for answer in answers] == [[3.0]] * len(headers)


def test_a_batch_is_sampled_with_the_first_sampled_request_it_serves(tmp_path: Path) -> None:
    # A ratio of 0 samples no trace of the server's own: only the callers' sampled ones are exported.
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    with Receiver() as receiver, running(tmp_path, **receiver.environment(**sampler)) as server:
        send_together(server, [traceparent(sampled=False)[0] for _ in range(4)])
        sampled = [traceparent(sampled=True) for _ in range(2)]
        send_together(server, [header for header, _ in sampled] + [traceparent(sampled=False)[0] for _ in range(2)])
        traces = {trace_id for _, trace_id in sampled}
        receiver.wait(lambda spans: linked_traces(spans) >= traces, "batch spans linking both sampled requests")
        time.sleep(1)  # what else was exported (nothing should be) is received
        spans = receiver.spans_now()
    assert {one.trace_id for one in spans} == traces, render(spans)
    batches = [one for one in spans if one.name == "batch"]
    assert 1 <= len(batches) <= 2, render(spans)
    for batch in batches:
        parent = next(one for one in spans if one.span_id == batch.parent_id)
        assert parent.kind == "server" and parent.trace_id == batch.trace_id
        assert any(one.name == "model" and one.parent_id == batch.span_id for one in spans), render(spans)


def linked_traces(spans: list[Span]) -> set[str]:
    """The traces the batch spans among ``spans`` link to."""
    return {link.trace_id for one in spans if one.name == "batch" for link in one.links}


#: A batch linking back to the span of a request that ended already (it timed out while the batch formed).
LINK_TO_ENDED = """
import logging
from stevedore_server.base import tracing

logging.basicConfig(level=logging.WARNING)
tracing.configure(True)
with tracing.span("request") as request:
    pass
with tracing.span("batch") as batch:
    tracing.add_link(request, batch)
tracing.shutdown()
print("linked")
"""


def test_a_link_back_to_a_request_that_ended_logs_nothing() -> None:
    with Receiver() as receiver:
        environment = {**os.environ, **receiver.environment()}
        done = subprocess.run(
            [sys.executable, "-c", LINK_TO_ENDED], env=environment, capture_output=True, text=True, timeout=60
        )
        receiver.wait(lambda spans: len(spans) == 2, "the two spans")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "linked", "")


def batches_of(spans: list[Span], requests: dict[str, str]) -> list[Span]:
    """The batch spans that link to any of ``requests`` (span ids)."""
    return [one for one in spans if one.name == "batch" and any(link.span_id in requests for link in one.links)]


def trace_of_batch(one: Span, batches: list[Span], spans: list[Span]) -> bool:
    linked = {link.span_id for batch in batches for link in batch.links}
    traces = {batch.trace_id for batch in batches} | {s.trace_id for s in spans if s.span_id in linked}
    return one.trace_id in traces


def test_a_stream_is_a_span_with_an_event_an_item(traced: Server, receiver: Receiver) -> None:
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with httpx.stream(
        "POST", f"{traced.url}/models/tracedstream/predict/stream", json=rows, headers={"x-request-id": "stream-1"}
    ) as answer:
        assert answer.status_code == 200
        events = [line for line in answer.iter_lines() if line.startswith("data:")]
    assert events[:3] == ["data: 3.0", "data: 7.0", "data: 11.0"]  # then the event that ends the stream
    root = server_span(receiver, "POST /models/{name}/predict/stream", "stream-1")
    tree = tree_of(receiver, root, 3)
    assert tree.names() == ("POST /models/{name}/predict/stream", [("validate", []), ("stream", [])]), render_node(tree)
    stream = tree.find("stream").span
    assert [event.name for event in stream.events] == ["item"] * 3
    assert [event.attributes["stevedore.stream.index"] for event in stream.events] == [0, 1, 2]
    assert stream.attributes["stevedore.stream.items"] == 3
    assert stream.attributes["stevedore.model.name"] == "tracedstream"


# -- the caller's trace -------------------------------------------------------------------------------------------


def test_a_callers_traceparent_is_continued_and_answered(traced: Server, receiver: Receiver) -> None:
    answer = predict(
        traced, "traced", traceparent=CALLER_TRACEPARENT, tracestate="vendor=1", **{"x-request-id": "tp-1"}
    )
    root = server_span(receiver, PREDICT, "tp-1")
    assert (root.trace_id, root.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    version, trace_id, span_id, _flags = answer.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", CALLER_TRACE, root.span_id)
    assert answer.headers["tracestate"] == "vendor=1"
    assert tree_of(receiver, root, 5).names()[0] == PREDICT


def test_a_grpc_callers_traceparent_is_continued_and_answered(traced: Server, receiver: Receiver) -> None:
    with grpc.insecure_channel(traced.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("traceparent", CALLER_TRACEPARENT), ("x-request-id", "tp-grpc"))
        ready, call = stub.ModelReady.with_call(service_pb2.ModelReadyRequest(name="traced"), metadata=metadata)
    assert ready.ready
    root = server_span(receiver, "inference.GRPCInferenceService/ModelReady", "tp-grpc")
    assert (root.trace_id, root.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    # The trailers name the trace and the server's span.
    trailers = dict(call.trailing_metadata())
    assert trailers["traceparent"].split("-")[1:3] == [CALLER_TRACE, root.span_id]


def test_a_malformed_traceparent_starts_a_new_trace(traced: Server, receiver: Receiver) -> None:
    answer = predict(traced, "traced", traceparent="00-junk-x", **{"x-request-id": "tp-junk"})
    root = server_span(receiver, PREDICT, "tp-junk")
    assert root.parent_id == "" and root.trace_id != CALLER_TRACE
    assert answer.headers["traceparent"].split("-")[1] == root.trace_id


def test_probes_and_metrics_are_not_traced(traced: Server, receiver: Receiver) -> None:
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert httpx.get(f"{traced.url}{path}", headers={"x-request-id": f"probe{path}"}).status_code == 200
    with grpc.insecure_channel(traced.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest(service=""), metadata=(("x-request-id", "probe-grpc"),))
    predict(traced, "traced", **{"x-request-id": "after-probes"})
    tree_of(receiver, server_span(receiver, PREDICT, "after-probes"), 5)  # the probes' spans would be in by now
    spans = receiver.spans_now()
    probes = [one for one in spans if str(one.attributes.get("stevedore.request.id", "")).startswith("probe")]
    assert probes == []


# -- log lines and metrics ----------------------------------------------------------------------------------------


def json_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def test_json_log_lines_carry_the_trace_and_span_ids(traced: Server, receiver: Receiver) -> None:
    predict(traced, "traced", **{"x-request-id": "log-json"})
    root = server_span(receiver, PREDICT, "log-json")
    model = tree_of(receiver, root, 5).find("model").span
    lines = [line for line in json_lines(traced) if line.get("request_id") == "log-json"]
    model_line = next(line for line in lines if line["message"] == "summing 2 rows")
    assert (model_line["trace_id"], model_line["span_id"]) == (root.trace_id, model.span_id)
    access = next(line for line in lines if line["logger"] == "stevedore.access")
    assert (access["trace_id"], access["span_id"]) == (root.trace_id, root.span_id)


def test_exemplars_name_the_trace_of_a_latency_sample(traced: Server, receiver: Receiver) -> None:
    predict(traced, "traced", **{"x-request-id": "exemplar-1"})
    root = server_span(receiver, PREDICT, "exemplar-1")
    accept = {"accept": "application/openmetrics-text; version=1.0.0"}
    answer = httpx.get(f"{traced.url}/metrics", headers=accept, timeout=10)
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    # Label values may hold braces (a route's template).
    pattern = r'^(\w+)_bucket\{((?:[^}"]|"[^"]*")*)\} \S+ # \{span_id="(\w+)",trace_id="(\w+)"\}'
    exemplars = re.findall(pattern, answer.text, re.M)
    families = {family for family, _, _, _ in exemplars}
    assert {"stevedore_http_request_duration_seconds", "stevedore_inference_duration_seconds"} <= families
    assert all(len(trace_id) == 32 and len(span_id) == 16 for _, _, span_id, trace_id in exemplars)
    # The model's latest inference is the exemplar of the bucket its time fell in.
    inferences = [
        (span_id, trace_id)
        for family, labels, span_id, trace_id in exemplars
        if family == "stevedore_inference_duration_seconds" and 'model="traced"' in labels
    ]
    assert (root.span_id, root.trace_id) in inferences
    # The Prometheus text format (the default) has no exemplars.
    assert "trace_id" not in httpx.get(f"{traced.url}/metrics", timeout=10).text


def test_text_log_lines_carry_the_ids_and_http_protobuf_exports(tmp_path: Path) -> None:
    with Receiver() as receiver, running(tmp_path, **receiver.environment("http/protobuf")) as server:
        predict(server, "traced", **{"x-request-id": "log-text"})
        root = server_span(receiver, PREDICT, "log-text")
        model = tree_of(receiver, root, 5).find("model").span
        assert root.transport == "http"
        lines = [line for line in server.log().splitlines() if "[log-text " in line]
        model_line = next(line for line in lines if line.endswith("summing 2 rows"))
        assert f"[log-text trace_id={root.trace_id} span_id={model.span_id}]" in model_line
        access = next(line for line in lines if " stevedore.access " in line)
        assert f"[log-text trace_id={root.trace_id} span_id={root.span_id}]" in access


def test_without_tracing_no_span_id_or_header(tmp_path: Path) -> None:
    with running(tmp_path, "--log-format", "json") as server:
        answer = predict(server, "traced", traceparent=CALLER_TRACEPARENT, **{"x-request-id": "off-1"})
        assert "traceparent" not in answer.headers
        lines = [line for line in json_lines(server) if line.get("request_id") == "off-1"]
        assert lines and not any("trace_id" in line for line in lines)


# -- export never fails a request ---------------------------------------------------------------------------------


def dropped(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.findall(r'^stevedore_trace_spans_dropped_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


def test_a_collector_down_changes_no_answer_and_is_logged_once(tmp_path: Path) -> None:
    grpc_port, http_port = free_ports(2)  # nothing listens there, yet
    environment = Receiver(grpc_port=grpc_port, http_port=http_port).environment("grpc")
    with running(tmp_path, **environment, OTEL_EXPORTER_OTLP_TIMEOUT="1") as server:
        for index in range(12):
            answer = predict(server, "traced", **{"x-request-id": f"down-{index}"})
            assert answer.json()["predictions"] == [3.0, 7.0]
            time.sleep(0.1)  # several exports, each failing
        wait_until(lambda: dropped(server).get("export_failed", 0) >= 12 * 5, "the failed exports counted")
        warning = "cannot export spans to the trace collector"
        assert server.log().count(warning) == 1, server.log()
        assert f"127.0.0.1:{grpc_port}" in next(line for line in server.log().splitlines() if warning in line)
        assert "Traceback" not in server.log() and "Failed to export" not in server.log()
        # The collector comes up: spans flow again, and the log says so, once. The first export after its return
        # may still meet the exporter's channel failing (its batch is dropped and counted), so a request a second.
        with Receiver(grpc_port=grpc_port, http_port=http_port) as receiver:
            sent = []

            def spans_flow() -> bool:
                sent.append(f"up-{len(sent)}")
                predict(server, "traced", **{"x-request-id": sent[-1]})
                ids = {one.attributes.get("stevedore.request.id") for one in receiver.spans_now()}
                return bool(ids & set(sent))

            wait_until(spans_flow, "spans received again", deadline=30, interval=1.0)
            wait_until(lambda: "takes spans again" in server.log(), "the collector's return logged")
            assert server.log().count("takes spans again") == 1
        started = time.monotonic()
    assert time.monotonic() - started < 10  # its spans do not hold the exit for the exporter's retries


def test_a_full_export_queue_drops_spans_and_counts_them(tmp_path: Path) -> None:
    with (
        Receiver(delay=1.0) as receiver,  # a slow collector: the queue fills while it takes a batch
        running(tmp_path, **receiver.environment("grpc", OTEL_BSP_MAX_QUEUE_SIZE="8")) as server,
    ):
        count = 30
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda index: predict(server, "traced"), range(count)))
        assert all(answer.json()["predictions"] == [3.0, 7.0] for answer in answers)
        full = dropped(server).get("queue_full", 0)
        assert full > 0
        # Every span of the predicts (five each) was either received or counted dropped.
        wait_until(
            lambda: len(receiver.spans) + dropped(server).get("queue_full", 0) >= count * 5,
            "every span received or counted",
            deadline=60,
        )


def test_tracing_without_a_supported_protocol_is_a_startup_error(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    env = Venv(Path(sys.prefix), ()).env(STEVEDORE_TRACING="true", OTEL_EXPORTER_OTLP_PROTOCOL="http/json")
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "stevedore-server"), "run", "--port", str(port), "--grpc-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported: use grpc or http/protobuf" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# -- the documentation's example ----------------------------------------------------------------------------------


def test_the_documented_commands_trace_a_request(tmp_path: Path) -> None:
    """The page's commands, run as shown (the collector's address and the server's port changed): the request
    joins the caller's trace, and the answer names it as the page shows."""
    text = page("observability/tracing.md")
    commands = block("bash", "stevedore-server run --tracing", text)
    exports = dict(
        shlex.split(line.split("#")[0])[1].split("=", 1) for line in commands.splitlines() if line.startswith("export")
    )
    run = shlex.split(next(line for line in commands.splitlines() if line.startswith("stevedore-server run")))
    with Receiver() as receiver:
        exports["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.environment()["OTEL_EXPORTER_OTLP_ENDPOINT"]
        server = Server.start(Venv(Path(sys.prefix), ()), tmp_path / "server.log", *run[2:], **exports)
        try:
            server.wait_for("/readyz", deadline=120)
            curl = block("bash", "curl -si localhost:8000", text).replace("localhost:8000", server.url)
            answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=True).stdout
        finally:
            server.stop()
        shown = block("text", "HTTP/1.1 200 OK\nx-request-id", text)
        assert answer.startswith("HTTP/1.1 200 OK"), answer
        documented = next(line for line in shown.splitlines() if line.startswith("traceparent:"))
        given = next(line for line in answer.splitlines() if line.startswith("traceparent:"))
        # The caller's trace, a span of the server's own.
        assert given.split("-")[:2] == documented.split("-")[:2] == ["traceparent: 00", CALLER_TRACE]
        root = receiver.wait(lambda spans: any(one.name == PREDICT for one in spans), "the predict's span")
        (span,) = [one for one in root if one.name == PREDICT]
        assert (span.trace_id, span.parent_id, span.service) == (CALLER_TRACE, CALLER_SPAN, "iris-server")
        assert given.split("-")[2] == span.span_id
