"""Payload logs (``--payload-log``): each inference's request and response, as KServe's logger sends them
(CloudEvents, read here by the ``cloudevents`` SDK in a real HTTP server) or as JSON lines; redacted, sampled,
left out per model, and never a request slowed or failed by a sink."""

from __future__ import annotations

import collections
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from stevedore_server import Predictor, hookimpl
from stevedore_server.base.inference_records import InferenceRecord
from stevedore_server.base.redaction import REDACTED, WITHHELD, parse_pointer, parse_pointers, redacted
from stevedore_server.base.settings import ModelSettings, Settings
from stevedore_server.core.payload_log import QUEUE_BYTES, QUEUE_SIZE, STREAM_BYTES, TRUNCATED, PayloadLog
from stevedore_server.frontends.state import of_lifespan
from stevedore_server.kit.loopback import free_ports
from stevedore_server.plugins.builtin.payload_log import NAMESPACE_FILE

from .documentation import block, page
from .helpers import Registers, record_distribution, wait_until
from .predictors import ROWS, ObjectPayload, RowSum, Words
from .venvs import REPO, Server, Venv

#: The example plugin, iris's distribution.
LOGREG = "stevedore-sklearn-logreg"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


class Counter(Predictor):
    """Sums rows, and streams each row's sum."""

    name = "counter"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [sum(row) for row in rows]

    def predict_stream(self, rows: list[list[float]]) -> Iterator[dict[str, Any]]:
        for index, row in enumerate(rows):
            yield {"row": index, "sum": sum(row)}


# -- a CloudEvents sink ----------------------------------------------------------------------------------------


class Receiver:
    """A CloudEvents sink on loopback: a real HTTP server that reads each POST with the ``cloudevents`` SDK
    (binary or structured content mode, as the SDK decides from the headers) and answers ``status``, ``delay``
    seconds later."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.events: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = from_http_event(HTTPMessage(headers, body))
                with receiver.lock:
                    receiver.events.append(event)
                    receiver.headers.append(headers)
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_ports(1)[0]), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def by_id(self, request_id: str) -> dict[str, Any]:
        """The events of one request, by their type."""
        with self.lock:
            return {event.get_type(): event for event in self.events if event.get_id() == request_id}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A sink a little slow (as over a network), so that the log still holds records when the server stops."""
    running = Receiver(delay=0.05)
    yield running
    running.close()


def serve(directory: Path, *args: str) -> Server:
    """The real ``stevedore-server run`` of the environment running the tests, serving ``rowsum``, ready."""
    site = directory / "site"
    record_distribution(site, "stevedore-test-payloads", {"rowsum": "tests.predictors:RowSum"})
    here = Venv(Path(sys.prefix), ())
    environment = {"PYTHONPATH": f"{REPO}:{site}"}
    server = Server.start(here, directory / "server.log", "--plugins", "stevedore-test-payloads", *args, **environment)
    try:
        server.wait_for("/readyz")
    except BaseException:
        server.stop()
        raise
    return server


def check_kserve_attributes(event: Any, event_type: str, request_id: str) -> None:
    """The attributes KServe's logger sets (pkg/logger/worker.go), as a KServe consumer reads them."""
    assert event.get_specversion() == "1.0"
    assert event.get_type() == event_type
    assert event.get_id() == request_id
    assert event.get_source().startswith("http://")
    assert isinstance(event.get_time(), datetime)
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("inferenceservicename") == "rowsum"
    assert event.get_extension("component") == "predictor"
    assert event.get_extension("endpoint") == "default"
    assert json.loads(event.get_extension("metadata")) == {}
    assert event.get_extension("modelversion") == "1"
    # The pod's namespace on Kubernetes; here, with no service account mounted, empty (but sent, as KServe does).
    assert event.get_extension("namespace") == pod_namespace()
    # Ours, not KServe's: when the event was sent.
    assert datetime.fromisoformat(event.get_extension("recordedtime")) >= event.get_time()


def pod_namespace() -> str:
    return NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.exists() else ""


def test_cloudevents_of_every_protocol_as_kserve_sends_them(tmp_path: Path, receiver: Receiver) -> None:
    server = serve(tmp_path, "--payload-log", receiver.url)
    try:
        rows = [[1, 2], [3, 4.5]]
        answer = httpx.post(server.url + "/models/rowsum/predict", json=rows, headers={"x-request-id": "rest-1"})
        assert answer.status_code == 200
        refused = httpx.post(server.url + "/models/rowsum/predict", json=[["x"]], headers={"x-request-id": "bad-1"})
        assert refused.status_code == 422
        array = np.array(rows, dtype=np.float64)
        with triton_http.InferenceServerClient(server.url.removeprefix("http://")) as client:
            tensor = triton_http.InferInput("input-0", [2, 2], "FP64")
            tensor.set_data_from_numpy(array, binary_data=True)
            output = triton_http.InferRequestedOutput("output-0", binary_data=True)
            over_v2 = client.infer("rowsum", [tensor], outputs=[output], headers={"x-request-id": "v2-1"})
        with triton_grpc.InferenceServerClient(server.grpc_target) as grpc_client:
            grpc_tensor = triton_grpc.InferInput("input-0", [2, 2], "FP64")
            grpc_tensor.set_data_from_numpy(array)
            over_grpc = grpc_client.infer("rowsum", [grpc_tensor], headers={"x-request-id": "grpc-1"})
            empty_rows = triton_grpc.InferInput("input-0", [1, 0], "FP64")
            empty_rows.set_data_from_numpy(np.zeros((1, 0)))
            with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
                grpc_client.infer("rowsum", [empty_rows], headers={"x-request-id": "grpc-bad"})
        # Answered at once, recorded in about 3 s by the slow sink: the graceful shutdown must hand them over.
        burst = [
            httpx.post(server.url + "/models/rowsum/predict", json=[[n]], headers={"x-request-id": f"burst-{n}"})
            for n in range(30)
        ]
        assert all(response.status_code == 200 for response in burst)
    finally:
        assert server.stop() == 0, server.log()

    rest = receiver.by_id("rest-1")
    assert set(rest) == {REQUEST_TYPE, RESPONSE_TYPE}
    check_kserve_attributes(rest[REQUEST_TYPE], REQUEST_TYPE, "rest-1")
    check_kserve_attributes(rest[RESPONSE_TYPE], RESPONSE_TYPE, "rest-1")
    assert rest[REQUEST_TYPE].get_data() == rows
    assert rest[RESPONSE_TYPE].get_data() == answer.json()
    assert rest[REQUEST_TYPE].get_extension("route") == "POST /models/{name}/predict"
    assert rest[REQUEST_TYPE].get_time() <= rest[RESPONSE_TYPE].get_time()

    bad = receiver.by_id("bad-1")  # as KServe: a request event, no response event for a failure
    assert set(bad) == {REQUEST_TYPE}
    assert bad[REQUEST_TYPE].get_data() == [["x"]]
    assert bad[REQUEST_TYPE].get_extension("status") == "422"

    v2 = receiver.by_id("v2-1")  # binary tensor data, recorded as the protocol's JSON
    (sent,) = v2[REQUEST_TYPE].get_data()["inputs"]
    assert sent == {"name": "input-0", "datatype": "FP64", "shape": [2, 2], "data": array.ravel().tolist()}
    (got,) = v2[RESPONSE_TYPE].get_data()["outputs"]
    assert got["name"] == "output-0" and got["data"] == over_v2.as_numpy("output-0").ravel().tolist()

    over = receiver.by_id("grpc-1")
    assert over[REQUEST_TYPE].get_extension("route") == "/inference.GRPCInferenceService/ModelInfer"
    assert over[REQUEST_TYPE].get_data()["inputs"][0]["data"] == array.ravel().tolist()
    (grpc_got,) = over[RESPONSE_TYPE].get_data()["outputs"]
    assert grpc_got["data"] == over_grpc.as_numpy("output-0").ravel().tolist()

    grpc_bad = receiver.by_id("grpc-bad")
    assert set(grpc_bad) == {REQUEST_TYPE} and grpc_bad[REQUEST_TYPE].get_extension("status") == "3"
    assert grpc_bad[REQUEST_TYPE].get_data()["inputs"] == [
        {"name": "input-0", "datatype": "FP64", "shape": [1, 0], "data": []}
    ]

    for n, response in enumerate(burst):
        events = receiver.by_id(f"burst-{n}")
        assert events[REQUEST_TYPE].get_data() == [[n]]
        assert events[RESPONSE_TYPE].get_data() == response.json()


# -- JSON lines ----------------------------------------------------------------------------------------------------


def test_the_workers_of_one_server_append_whole_lines_to_one_file(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    server = serve(tmp_path, "--workers", "2", "--payload-log", f"file:{path}")
    try:
        ids = [f"worker-line-{n}" for n in range(60)]
        rows = [[float(n)] * 200 for n in range(4)]  # lines of a few kilobytes
        for request_id in ids:  # a new connection each, which either worker may take
            answer = httpx.post(server.url + "/models/rowsum/predict", json=rows, headers={"x-request-id": request_id})
            assert answer.status_code == 200
    finally:
        assert server.stop() == 0, server.log()
    recorded = lines(path)  # each line whole JSON, none lost at shutdown
    assert sorted(line["id"] for line in recorded) == sorted(ids)
    assert all(line["request"] == rows for line in recorded)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_lines(path: Path, count: int) -> list[dict[str, Any]]:
    wait_until(lambda: len(lines(path)) >= count, f"{count} lines in {path}", explain=lambda: path.read_text())
    return lines(path)


def binary_body(rows: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    """A V2 REST request with its one input as binary tensor data, and its header."""
    header = {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(rows.shape),
                    "parameters": {"binary_data_size": rows.nbytes}}],
        "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    text = json.dumps(header).encode()
    return text + rows.astype("<f8").tobytes(), {"inference-header-content-length": str(len(text))}


def test_json_lines_of_every_http_route(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    client = make_client(Registers(RowSum(), Counter()), settings=Settings(payload_log=f"file:{path}"))
    exchanges = [
        ("POST /models/{name}/predict", client.post("/models/rowsum/predict", json=[[1, 2]]), [[1, 2]]),
        ("POST /models/{name}/versions/{version}/score",
         client.post("/models/rowsum/versions/1/score", json=[{"x": [1, 2], "y": 3}]), [{"x": [1, 2], "y": 3}]),
        ("POST /predict", client.post("/predict", json={"predictor": "rowsum", "payload": [[5]]}),
         {"predictor": "rowsum", "payload": [[5]]}),
        ("POST /v2/models/{name}/infer",
         client.post("/v2/models/rowsum/infer", json={"inputs": [{"name": "input-0", "datatype": "FP64",
                                                                  "shape": [1, 2], "data": [1, 2]}]}),
         {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}]}),
        ("POST /v2/models/{name}/generate", client.post("/v2/models/rowsum/generate", json={"input-0": [[2, 2]]}),
         {"input-0": [[2, 2]]}),
    ]  # fmt: skip
    rows = np.array([[1.5, 2.0]])
    content, headers = binary_body(rows)
    binary = client.post("/v2/models/rowsum/infer", content=content, headers=headers)
    stream = client.post("/models/counter/predict/stream", json=[[1, 2], [3, 4]])
    refused = client.post("/models/rowsum/predict", json={"not": "rows"})
    assert [response.status_code for _, response, _ in exchanges] == [200] * 5
    assert (binary.status_code, stream.status_code, refused.status_code) == (200, 200, 422)

    recorded = wait_for_lines(path, len(exchanges) + 3)
    by_id = {line["id"]: line for line in recorded}
    for route, response, sent in exchanges:
        line = by_id[response.headers["x-request-id"]]
        assert (line["route"], line["status"], line["ok"], line["protocol"]) == (route, 200, True, "http")
        assert line["request"] == sent and line["response"] == response.json()
        assert (line["model"], line["version"]) == ("rowsum", "1") and line["duration_ms"] > 0
        assert datetime.fromisoformat(line["time"])

    line = by_id[binary.headers["x-request-id"]]
    assert line["request"]["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1.5, 2.0]}]
    (output,) = line["response"]["outputs"]
    assert output["datatype"] == "FP64"
    size = int(binary.headers["inference-header-content-length"])
    assert output["data"] == list(struct.unpack(f"<{output['shape'][0]}d", binary.content[size:]))

    line = by_id[stream.headers["x-request-id"]]
    assert line["request"] == [[1, 2], [3, 4]]
    assert line["response"] == [{"row": 0, "sum": 3}, {"row": 1, "sum": 7}]

    line = by_id[refused.headers["x-request-id"]]  # a failure: its request, its status, no response
    assert (line["status"], line["ok"], line["request"]) == (422, False, {"not": "rows"})
    assert "response" not in line


@pytest.mark.parametrize("redact", [(), ("/text",)], ids=["as its text", "withheld when fields are redacted"])
def test_a_body_the_route_refused_is_recorded_as_its_text_unless_fields_are_redacted(
    make_client: Callable[..., TestClient], tmp_path: Path, redact: tuple[str, ...]
) -> None:
    """A body that is no JSON has no field a pointer could find: with any pointer set, it is withheld whole, as
    its text might hold the very field (here ``text``) the pointer names."""
    path = tmp_path / "payloads.jsonl"
    client = make_client(Registers(RowSum()), settings=Settings(payload_log=f"file:{path}", payload_log_redact=redact))
    content, headers = binary_body(np.array([[1.0, 2.0]]))
    secret = b'{"text": "my secret"'  # cut short: no JSON
    sent = [content, content[:-3], b"[[1, 2", secret, secret]
    refused = [
        client.post("/v2/models/rowsum/infer", content=content, headers={"inference-header-content-length": "x"}),
        client.post("/v2/models/rowsum/infer", content=content[:-3], headers=headers),  # binary data cut short
        client.post("/models/rowsum/predict", content=b"[[1, 2"),
        client.post("/models/rowsum/predict", content=secret),
        client.post("/v2/models/rowsum/infer", content=secret),
    ]
    assert [response.status_code for response in refused] == [400] * len(sent)
    recorded = {line["id"]: line for line in wait_for_lines(path, len(refused))}
    for response, body in zip(refused, sent, strict=True):
        line = recorded[response.headers["x-request-id"]]
        assert (line["status"], line["request"]) == (400, WITHHELD if redact else body.decode("utf-8", "replace"))
    assert ("my secret" in path.read_text()) is not bool(redact)
    assert dropped(client, "unreadable") == 0


def test_json_lines_to_standard_output_in_request_mode(
    make_client: Callable[..., TestClient], capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_client(Registers(RowSum()), settings=Settings(payload_log="-", payload_log_mode="request"))
    answer = client.post("/models/rowsum/predict", json=[[4, 4]])

    written: list[dict[str, Any]] = []

    def read() -> bool:
        written.extend(json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{"))
        return bool(written)

    wait_until(read, "a JSON line on standard output")
    (line,) = written
    assert line["id"] == answer.headers["x-request-id"]
    assert line["request"] == [[4, 4]] and "response" not in line


# -- redaction, sampling, opting out --------------------------------------------------------------------------


def test_pointers_follow_rfc_6901_with_a_wildcard() -> None:
    assert parse_pointer("/a~1b/m~0n/0") == ("a/b", "m~n", "0")
    document = {"a/b": {"m~n": [1, 2]}, "rows": [{"email": "x", "k": 1}, {"email": "y"}], "01": 5}
    pointers = parse_pointers(["/a~1b/m~0n/0", "/rows/*/email", "/missing/x", "/rows/7", "/rows/01", "/01"])
    assert redacted(document, pointers) == {
        "a/b": {"m~n": [REDACTED, 2]},
        "rows": [{"email": REDACTED, "k": 1}, {"email": REDACTED}],
        "01": REDACTED,  # an object's key, not an index: any token names it
    }
    assert document["rows"][0]["email"] == "x"  # a copy was redacted, not the value itself
    with pytest.raises(ValueError, match="does not start with /"):
        parse_pointer("rows")


def test_redacted_before_any_sink_sees_them(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    settings = Settings(payload_log=f"file:{path}", payload_log_redact=("/text", "/predictions", "/*/0"))
    client = make_client(Registers(ObjectPayload(), RowSum()), settings=settings)
    secret = client.post("/models/object-payload/predict", json={"text": "my secret"})
    rows = client.post("/models/rowsum/predict", json=[[1, 2], [3, 4]])
    assert secret.json()["predictions"] == "MY SECRET"  # the client's answer is never redacted
    recorded = {line["id"]: line for line in wait_for_lines(path, 2)}
    first = recorded[secret.headers["x-request-id"]]
    assert first["request"] == {"text": REDACTED}
    assert first["response"] == {"model_name": "object-payload", "model_version": "1", "predictions": REDACTED}
    assert recorded[rows.headers["x-request-id"]]["request"] == [[REDACTED, 2], [REDACTED, 4]]
    assert "my secret" not in path.read_text() and "MY SECRET" not in path.read_text()


def test_sampled_within_a_binomial_bound(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    client = make_client(Registers(RowSum()), settings=Settings(payload_log=f"file:{path}", payload_log_sample=0.25))
    count, share = 400, 0.25
    for _ in range(count):
        assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
    client.__exit__(None, None, None)  # shut down: the queue is handed over whole
    recorded = len(lines(path))
    mean, deviation = count * share, (count * share * (1 - share)) ** 0.5
    assert abs(recorded - mean) < 5 * deviation, recorded  # 100 +- 43: fails once in 3.5 million runs


def test_a_model_left_out(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    settings = Settings(payload_log=f"file:{path}", models={"rowsum": ModelSettings(payload_log=False)})
    client = make_client(Registers(RowSum(), Words()), settings=settings)
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
    words = client.post("/models/words/predict", json=["hi"])
    client.__exit__(None, None, None)
    assert [line["id"] for line in lines(path)] == [words.headers["x-request-id"]]


# -- sinks that fail -------------------------------------------------------------------------------------------


def dropped(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'stevedore_payload_log_dropped_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no stevedore_payload_log_dropped_total for {reason}")


@pytest.fixture
def hanging_sink() -> Iterator[str]:
    """A URL whose server takes each connection and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", free_ports(1)[0]))
    listener.listen(64)  # never accepted: the kernel completes the handshakes, nobody answers
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()


@pytest.mark.parametrize("sink", ["refusing", "hanging", "answering 400"])
def test_a_failing_sink_changes_no_answer_and_counts_drops(
    make_client: Callable[..., TestClient],
    hanging_sink: str,
    caplog: pytest.LogCaptureFixture,
    sink: str,
) -> None:
    refusing = Receiver(status=400)
    url = {"refusing": f"http://127.0.0.1:{free_ports(1)[0]}/", "hanging": hanging_sink, "answering 400": refusing.url}
    # A second at shutdown for the queue: the hanging sink holds it longer, and what is left is counted.
    client = make_client(Registers(RowSum()), settings=Settings(payload_log=url[sink], graceful_timeout=1.0))
    try:
        for _ in range(20):
            started = time.monotonic()
            answer = client.post("/models/rowsum/predict", json=[[1, 2]])
            assert answer.status_code == 200 and answer.json()["predictions"] == [3]
            assert time.monotonic() - started < 0.5  # a hanging sink holds its thread ~7 s a record
        wait_until(lambda: dropped(client, "sink_error") >= 1, "a drop counted", deadline=30)
    finally:
        refusing.close()
    failures = [record for record in caplog.records if "failed to record an inference" in record.getMessage()]
    assert len(failures) == 1, "logged once, not once a record"


class Blocking:
    """A payload log plugin that holds the log's thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records: list[InferenceRecord] = []

    @hookimpl
    def stevedore_inference_logged(self, record: InferenceRecord) -> None:
        self.entered.set()
        self.release.wait(60)
        self.records.append(record)


def test_a_full_queue_drops_and_counts(make_client: Callable[..., TestClient]) -> None:
    plugin = Blocking()
    client = make_client(Registers(RowSum()), plugin)
    try:
        assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
        assert plugin.entered.wait(30)  # the thread holds the first record
        extra = 5
        for _ in range(QUEUE_SIZE + extra):  # the queue full, then dropped
            assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
        assert dropped(client, "queue_full") == extra
    finally:
        plugin.release.set()
    wait_until(lambda: len(plugin.records) == QUEUE_SIZE + 1, "the queue handed over")


def test_a_queue_full_of_bytes_drops_and_counts(make_client: Callable[..., TestClient]) -> None:
    """The queue is bounded in the bytes its records' bodies hold too, until the hook is done with them: a slow
    sink never holds a thousand bodies of 16 MiB."""
    plugin = Blocking()
    client = make_client(Registers(RowSum()), plugin)
    large = b" " * (QUEUE_BYTES // 8) + b"x"  # refused at once (no JSON), recorded all the same
    try:
        assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
        assert plugin.entered.wait(30)  # the thread holds the first record
        for _ in range(10):  # 7 fit beside the first (its few bytes), the next 3 do not
            assert client.post("/models/rowsum/predict", content=large).status_code == 400
        assert dropped(client, "queue_full") == 3
    finally:
        plugin.release.set()
    wait_until(lambda: len(plugin.records) == 8, "the queue handed over")
    assert client.post("/models/rowsum/predict", content=large).status_code == 400  # room again, once handed over
    wait_until(lambda: len(plugin.records) == 9, "a large record after the queue emptied")
    assert dropped(client, "queue_full") == 3


class Chatty(Predictor):
    """Streams as many items of a mebibyte of text as its first row's first number says."""

    name = "chatty"
    predict_schema = ROWS
    predict_fixture = [[1]]

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [sum(row) for row in rows]

    def predict_stream(self, rows: list[list[float]]) -> Iterator[str]:
        for _ in range(int(rows[0][0])):
            yield "x" * (1 << 20)


def test_a_long_stream_is_recorded_up_to_a_bound(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    client = make_client(Registers(Chatty()), settings=Settings(payload_log=f"file:{path}"))
    count = STREAM_BYTES // (1 << 20) + 4
    answer = client.post("/models/chatty/predict/stream", json=[[count]])
    assert answer.status_code == 200
    assert answer.text.count("data: ") == count + 1  # the client got every item, and the end
    wait_until(lambda: path.exists() and path.read_bytes().endswith(b"\n"), "the stream's line written whole")
    (line,) = lines(path)
    kept = line["response"]
    assert kept[-1] == TRUNCATED
    assert kept[:-1] == ["x" * (1 << 20)] * (len(kept) - 1)
    assert STREAM_BYTES // (1 << 20) - 1 <= len(kept) - 1 < count  # the events kept: up to the bound, no more


def test_a_failed_write_counts_every_line_it_lost(make_client: Callable[..., TestClient]) -> None:
    """Records that come together are written in one write: when it fails (here ``/dev/full``: no space left),
    each of their lines is a record dropped, not the last alone."""
    plugin = Blocking()
    client = make_client(Registers(RowSum()), plugin, settings=Settings(payload_log="file:/dev/full"))
    try:
        assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
        assert plugin.entered.wait(30)  # the thread holds the first record: the next five come together
        for _ in range(5):
            assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
    finally:
        plugin.release.set()
    wait_until(lambda: len(plugin.records) == 6, "the records handed over")
    wait_until(lambda: dropped(client, "sink_error") == 6, "every lost line counted", explain=lambda: str(
        dropped(client, "sink_error")))  # fmt: skip


class Recording:
    """A payload log plugin that keeps what it receives."""

    def __init__(self) -> None:
        self.records: list[InferenceRecord] = []

    @hookimpl
    def stevedore_inference_logged(self, record: InferenceRecord) -> None:
        self.records.append(record)


class ClosingMeanwhile(collections.deque[Any]):
    """The log's queue, which has the log closed (in another thread, as the lifespan's shutdown does) just as a
    record is appended: the race between a request answered and the server stopping, made to happen every time."""

    def __init__(self, log: PayloadLog) -> None:
        super().__init__()
        self.log = log

    def append(self, item: Any) -> None:
        closing = threading.Thread(target=self.log.close, args=(5.0,))
        closing.start()
        closing.join(1.0)  # the close finishes first, unless the log makes it wait for the record
        super().append(item)


def test_a_record_racing_the_close_is_handed_over_or_counted(make_client: Callable[..., TestClient]) -> None:
    plugin = Recording()
    client = make_client(Registers(RowSum()), plugin)
    assert client.post("/models/rowsum/predict", json=[[1]]).status_code == 200
    wait_until(lambda: len(plugin.records) == 1, "the first record (the log's thread started)")
    state = of_lifespan(client.app_state)
    assert state is not None
    log = state.server.payload_log
    log.pending = ClosingMeanwhile(log)
    assert client.post("/models/rowsum/predict", json=[[2]]).status_code == 200
    assert log.thread is not None
    log.thread.join(10)
    assert not log.thread.is_alive()
    assert len(plugin.records) + dropped(client, "shutdown") == 2, "a record lost, neither handed over nor counted"


def test_a_json_lines_file_that_cannot_be_written_stops_the_server_at_startup(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "payloads.jsonl"
    command = [str(Path(sys.prefix) / "bin" / "stevedore-server"), "run", "--plugins", LOGREG, "--port", "0"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STEVEDORE_")}
    result = subprocess.run(
        [*command, "--grpc-port", "0", "--payload-log", f"file:{missing}"],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: setting payload_log: cannot append to {missing}: No such file or directory (its folder must exist "
        "and be writable)"
    )


# -- the page's example ----------------------------------------------------------------------------------------


def test_the_documented_receiver_prints_what_the_page_shows(tmp_path: Path) -> None:
    """The page's receiver, command line and request, run as shown but for the ports."""
    text = page("observability/payload-logs.md")
    port = free_ports(1)[0]
    script = tmp_path / "receiver.py"
    script.write_text(block("python", "# receiver.py", text).replace("8080", str(port)))
    printed = tmp_path / "printed.txt"
    with printed.open("wb") as out:
        receiving = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port), "the receiver listening")
        commands = block("sh", "python receiver.py &", text).replace("\\\n", " ").splitlines()
        run = shlex.split(commands[1].replace("8080", str(port)).rstrip("& "))
        assert run[:2] == ["stevedore-server", "run"]
        curl, shown = commands[2].split("  # ")
        words = shlex.split(curl)
        headers = dict([words[words.index("-H") + 1].split(": ")])
        server = Server.start(Venv(Path(sys.prefix), ()), tmp_path / "server.log", "--plugins", LOGREG, *run[2:])
        try:
            server.wait_for("/readyz")
            path = words[-1].removeprefix("localhost:8000")
            answer = httpx.post(server.url + path, content=words[words.index("-d") + 1], headers=headers)
            assert answer.json() == json.loads(shown)
            expected = block("text", "request req-1", text).strip().splitlines()
            wait_until(lambda: printed.read_text().splitlines() == expected, "the receiver's lines", deadline=30,
                       explain=printed.read_text)  # fmt: skip
        finally:
            server.stop()
    finally:
        receiving.kill()
        receiving.wait()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_documented_settings_load(tmp_path: Path) -> None:
    settings_file = tmp_path / "stevedore.toml"
    settings_file.write_text(block("toml", "payload_log_redact = [", page("observability/payload-logs.md")))
    settings = Settings.load({}, config=str(settings_file))
    assert settings.payload_log == "file:/var/log/stevedore/payloads.jsonl"
    assert parse_pointers(settings.payload_log_redact) == (("*", "email"), ("predictions",))
    assert settings.for_model("iris").payload_log is False
