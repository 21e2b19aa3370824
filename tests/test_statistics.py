"""Triton's statistics and model configuration extensions against a real ``stevedore-server run``, read with
NVIDIA's ``tritonclient`` over HTTP and gRPC: counts that agree with a known sequence of requests (successes, a
failure, a batch), durations measured where the stages are, and the configuration as Triton's tools read it."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import json_format
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from .documentation import block, page
from .helpers import record_distribution
from .venvs import REPO, Server, Venv

pytestmark = pytest.mark.server

#: The batching model waits this long for a batch to fill (``statistics_models.Batching``).
BATCH_WINDOW_NS = 1_000_000_000
CONFIG = """
[models.plain]
max_concurrency = 2
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server of the environment running the tests, serving ``statistics_models``' two models."""
    directory = tmp_path_factory.mktemp("statistics")
    site = directory / "site"
    models = {"plain": "tests.statistics_models:Plain", "batching": "tests.statistics_models:Batching"}
    record_distribution(site, "stevedore-test-statistics", models)
    (directory / "stevedore.toml").write_text(CONFIG)
    here = Venv(Path(sys.prefix), ())
    options = ("--plugins", "stevedore-test-statistics", "--config", str(directory / "stevedore.toml"))
    server = Server.start(here, directory / "server.log", *options, PYTHONPATH=f"{REPO}:{site}")
    try:
        server.wait_for("/readyz", deadline=120)
        yield server
    finally:
        server.stop()


def http_client(server: Server) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server.url.removeprefix("http://"))


def rows_input(module: Any, rows: list[list[float]]) -> Any:
    tensor = module.InferInput("input-0", [len(rows), 2], "FP64")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float64))
    return tensor


def infer_http(server: Server, model: str, rows: list[list[float]]) -> Any:
    return http_client(server).infer(model, [rows_input(triton_http, rows)]).as_numpy("output-0")


def infer_grpc(server: Server, model: str, rows: list[list[float]]) -> Any:
    with triton_grpc.InferenceServerClient(server.grpc_target) as client:
        return client.infer(model, [rows_input(triton_grpc, rows)]).as_numpy("output-0")


def read_both(server: Server, model: str) -> dict[str, Any]:
    """The model's statistics read over HTTP and over gRPC, which must agree (reading counts nothing): the HTTP
    answer, parsed into Triton's own message (every field name Triton's), is the gRPC answer."""
    over_http = http_client(server).get_inference_statistics(model)
    with triton_grpc.InferenceServerClient(server.grpc_target) as client:
        over_grpc = client.get_inference_statistics(model)
    assert json_format.ParseDict(over_http, service_pb2.ModelStatisticsResponse()) == over_grpc
    (stats,) = over_http["model_stats"]
    assert (stats["name"], stats["version"]) == (model, "1")
    return dict(stats)


def durations(stats: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {stage: (d.get("count", 0), d.get("ns", 0)) for stage, d in stats["inference_stats"].items()}


def test_a_known_sequence_is_counted_alike_over_http_and_grpc(served: Server) -> None:
    """Four successes (two V2 REST, one gRPC, one stevedore route) and a model's failure: each request of an
    unbatched model one inference and one execution; every stage of the successes measured."""
    before = time.time() * 1000
    assert infer_http(served, "plain", [[1, 2], [3, 4]]).tolist() == [3, 7]
    assert infer_http(served, "plain", [[5, 6]]).tolist() == [11]
    assert infer_grpc(served, "plain", [[1, 1], [2, 2], [3, 3]]).tolist() == [2, 4, 6]
    assert httpx.post(served.url + "/models/plain/predict", json=[[0, 1]]).json()["predictions"] == [1]
    with pytest.raises(InferenceServerException):
        infer_http(served, "plain", [[-1, 2]])
    stats = read_both(served, "plain")
    assert (stats["inference_count"], stats["execution_count"]) == (4, 4)
    assert before <= stats["last_inference"] <= time.time() * 1000
    timed = durations(stats)
    assert timed["success"][0] == 4 and timed["fail"][0] == 1 and timed["fail"][1] > 0
    assert all(timed[stage][0] == 4 for stage in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert all(timed[stage][1] > 0 for stage in ("queue", "compute_input", "compute_infer", "compute_output"))
    parts = sum(timed[stage][1] for stage in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert timed["success"][1] >= parts
    (batch,) = stats["batch_stats"]  # an unbatched model's every call is of batch size 1, as Triton's
    assert batch["batch_size"] == 1 and batch["compute_infer"] == stats["inference_stats"]["compute_infer"]


def test_a_batch_is_one_execution_and_a_lone_request_waits_the_batch_window(served: Server) -> None:
    """A lone request of two rows waits the whole window in the queue; three requests together (1, 2 and 3 rows)
    fill a batch, one execution of six rows; a batched model counts rows as inferences, as Triton counts a batch."""
    assert infer_grpc(served, "batching", [[1, 2], [3, 4]]).tolist() == [3, 7]
    answers: dict[int, list[float]] = {}
    barrier = threading.Barrier(3)

    def send(size: int) -> None:
        barrier.wait()
        answers[size] = infer_http(served, "batching", [[size, 1]] * size).tolist()

    threads = [threading.Thread(target=send, args=(size,)) for size in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {1: [2], 2: [3, 3], 3: [4, 4, 4]}
    stats = read_both(served, "batching")
    assert (stats["inference_count"], stats["execution_count"]) == (8, 2)
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [(2, 1), (6, 1)]
    timed = durations(stats)
    assert timed["success"][0] == timed["queue"][0] == 4 and timed["fail"] == (0, 0)
    assert timed["queue"][1] >= BATCH_WINDOW_NS * 0.95  # the lone request's wait (timers may fire a hair early)
    assert timed["success"][1] >= timed["queue"][1] + timed["compute_infer"][1]


def config_both(server: Server, model: str) -> dict[str, Any]:
    """The model's configuration over HTTP, which is Triton's ``ModelConfig`` and what gRPC answers."""
    over_http = http_client(server).get_model_config(model)
    with triton_grpc.InferenceServerClient(server.grpc_target) as client:
        over_grpc = client.get_model_config(model)
    assert json_format.ParseDict({"config": over_http}, service_pb2.ModelConfigResponse()) == over_grpc
    return dict(over_http)


def test_the_model_configuration_answers_over_http_and_grpc(served: Server) -> None:
    plain = config_both(served, "plain")
    assert plain == {
        "name": "plain",
        "platform": "stevedore",
        "backend": "stevedore",
        "max_batch_size": 0,
        "input": [{"name": "input-0", "data_type": "TYPE_FP64", "dims": [-1, 2]}],
        "output": [{"name": "output-0", "data_type": "TYPE_FP64", "dims": [-1]}],
        "instance_group": [{"name": "plain", "kind": "KIND_CPU", "count": 2}],
    }
    batching = config_both(served, "batching")
    assert batching["max_batch_size"] == 3
    assert batching["dynamic_batching"] == {"max_queue_delay_microseconds": 1_000_000}
    assert batching["input"] == [{"name": "input-0", "data_type": "TYPE_FP64", "dims": [2]}]
    # One value a row: Triton's dims [1] reshaped to a scalar.
    assert batching["output"] == [{"name": "output-0", "data_type": "TYPE_FP64", "dims": [1], "reshape": {"shape": []}}]


def test_every_served_model_has_statistics_and_unknown_ones_are_refused(served: Server) -> None:
    every = http_client(served).get_inference_statistics()
    assert sorted(stats["name"] for stats in every["model_stats"]) == ["batching", "plain"]
    assert httpx.get(served.url + "/v2/models/plain/versions/1/stats").json()["model_stats"][0]["name"] == "plain"
    for path in ("/v2/models/nope/stats", "/v2/models/plain/versions/9/stats", "/v2/models/nope/config"):
        answer = httpx.get(served.url + path)
        assert answer.status_code == 404 and "error" in answer.json()
    with triton_grpc.InferenceServerClient(served.grpc_target) as client:
        for ask in (client.get_inference_statistics, client.get_model_config):
            with pytest.raises(InferenceServerException) as caught:
                ask("nope")
            assert caught.value.status() == "StatusCode.NOT_FOUND"
        extensions = client.get_server_metadata(as_json=True)["extensions"]
    assert {"statistics", "model_configuration"} <= set(extensions)
    assert {"statistics", "model_configuration"} <= set(http_client(served).get_server_metadata()["extensions"])


def run_page_example(script: str, url: str) -> int:
    """Run the page's script against the server at ``url``: each line ``print(...)  # RESULT`` prints ``RESULT``,
    or, for ``# e.g. RESULT``, a line like it with other numbers. Returns how many lines were checked."""
    script = script.replace("127.0.0.1:8000", url.removeprefix("http://"))
    shown = [line.partition("  # ")[2] for line in script.splitlines() if line.startswith("print(")]
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    printed = ran.stdout.splitlines()
    assert len(printed) == len(shown)
    for line, expected in zip(printed, shown, strict=True):
        if expected.startswith("e.g. "):
            assert re.fullmatch(re.sub(r"\d+", r"\\d+", re.escape(expected.removeprefix("e.g. "))), line), line
        else:
            assert line == expected
    return len(shown)


def test_the_pages_example_prints_what_it_shows(example_server: Server) -> None:
    script = block("python", "get_inference_statistics", page("observability/statistics.md"))
    assert run_page_example(script, example_server.url) == 3
