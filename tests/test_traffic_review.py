"""Traffic names against a real ``stevedore-server run``, where they met clients badly: a split a PUT cannot route
refused with a 400 (the name kept routing); a traffic name answering for its catalogue entry, readiness, schema and
V2 metadata (what a client asks before it infers), naming its variant in a stream's headers, and called by a
pipeline's step; a shadow given the request as sent even when the live predictor changes its input in place."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .counting import metric
from .helpers import wait_until
from .test_traffic import serve
from .venvs import Server

#: The models of these tests: a distribution's name and its entry point (``traffic_review_models``).
PLUGIN = ("stevedore-test-review", {"review": "tests.traffic_review_models:models"})

pytestmark = pytest.mark.server

CONFIG = """
[traffic.wines]
split = [{ model = "wine:1.0.0", weight = 90 }, { model = "wine:2.0.0", weight = 10 }]

[traffic.other]
split = [{ model = "wine:1.0.0", weight = 1 }]

[traffic.mutated]
split = [{ model = "wine-mutating", weight = 1 }]
sticky = "pointer:/0/0"  # the body parsed before the variant gets it: a JSON value the predictor could change
shadow = "wine:1.0.0"

[traffic.streams]
split = [{ model = "wine-streaming:2.0.0", weight = 1 }]

[pipelines.through-traffic]  # a step naming a traffic name: its calls go to the variants
type = "sequence"
steps = [{ model = "wines" }]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("traffic-review"), CONFIG, plugin=PLUGIN)
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("split", "problem"),
    [
        ([{"model": "other", "weight": 1}], "traffic names"),
        ([{"model": "wine:1.0.0", "weight": 1}, {"model": "no-such-model", "weight": 1}], "no model serves"),
        ([{"model": "wine:9.9.9", "weight": 1}], "no model serves"),
        ([{"model": "wine:1.0.0", "weight": 1e308}, {"model": "wine:2.0.0", "weight": 1e308}], "finite"),
        ([], "non-empty"),
        ([{"model": "wine:1.0.0", "weight": "1"}], "a number"),
    ],
)
def test_a_split_it_cannot_route_is_refused_and_the_name_keeps_routing(
    server: Server, split: object, problem: str
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.put("/traffic/wines", json={"split": split})
        assert refused.status_code == 400, refused.text
        assert problem in refused.text
        detail = client.get("/traffic/wines").json()
        assert detail["state"] == "ready"
        assert [variant["weight"] for variant in detail["split"]] == [90.0, 10.0]
        assert client.post("/models/wines/predict", json=[[1, 2]]).status_code == 200


def test_a_long_split_is_answered_without_holding_the_server(server: Server) -> None:
    split = [{"model": f"wine-{index}", "weight": 1} for index in range(20_000)]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        refused = client.put("/traffic/wines", json={"split": split})
        assert refused.status_code in (400, 413), refused.text


def test_a_traffic_name_answers_as_its_heaviest_variant_before_any_request(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        entry = client.get("/models/wines")
        assert entry.status_code == 200, entry.text
        assert (entry.json()["name"], entry.json()["version"]) == ("wine", "1.0.0")
        assert client.get("/models/wines/ready").status_code == 200
        schema = client.get("/models/wines/schemas/predict")
        assert schema.status_code == 200 and schema.json()["type"] == "array", schema.text
        assert client.get("/v2/models/wines/ready").status_code == 200
        metadata = client.get("/v2/models/wines")
        assert metadata.status_code == 200 and metadata.json()["name"] == "wine", metadata.text
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name="wines"), timeout=30).ready


def test_a_shadow_gets_the_request_as_sent_when_the_live_predictor_changes_it(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(3):
            answer = client.post("/models/mutated/predict", json=[[1, 2], [3, 4]])
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == [3.0, 7.0]
    labels = {"traffic": "mutated", "live": "wine-mutating:1.0.0", "shadow": "wine:1.0.0"}

    def compared() -> float:
        return metric(server, "stevedore_shadow_comparisons_total", **labels)

    wait_until(lambda: compared() == 3, "the shadow's copies compared", explain=lambda: str(compared()))
    assert metric(server, "stevedore_shadow_comparisons_total", outcome="equal", **labels) == 3


def test_a_stream_of_a_traffic_name_names_its_variant(server: Server) -> None:
    url = f"{server.url}/models/streams/predict/stream"
    with httpx.stream("POST", url, json=[[1, 2]], timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert (response.headers["X-Model-Name"], response.headers["X-Model-Version"]) == ("wine-streaming", "2.0.0")
        assert "3" in response.read().decode()


def test_a_pipeline_step_may_name_a_traffic_name(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/pipelines/through-traffic").json()
        assert listed["state"] == "ready", listed
        answer = client.post("/pipelines/through-traffic/predict?steps=true", json=[[1, 2]])
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [3.0]
        assert answer.json()["steps"][0]["model_version"] in ("1.0.0", "2.0.0")


def test_sighup_keeps_a_split_put_where_the_file_left_it_as_it_was(tmp_path: Path) -> None:
    """One process, as a worker of ``--workers N`` restarted by SIGHUP: the file read again replaces a split put
    while serving only where it changed that name's split."""
    running = serve(tmp_path, CONFIG, plugin=PLUGIN)
    try:
        put = [{"model": "wine:2.0.0", "weight": 1.0}]
        assert httpx.put(f"{running.url}/traffic/wines", json={"split": put}, timeout=30).status_code == 200
        changed = CONFIG.replace('{ model = "wine:1.0.0", weight = 1 }]', '{ model = "wine:2.0.0", weight = 1 }]')
        (tmp_path / "stevedore.toml").write_text(
            changed + '\n[traffic.more]\nsplit = [{ model = "wine" , weight = 1 }]\n'
        )
        running.process.send_signal(signal.SIGHUP)

        def names() -> list[str]:
            return [entry["name"] for entry in httpx.get(f"{running.url}/traffic", timeout=30).json()["traffic"]]

        wait_until(lambda: "more" in names(), "the file read again", explain=running.log)
        assert httpx.get(f"{running.url}/traffic/wines", timeout=30).json()["split"] == put  # the file's as before
        other = httpx.get(f"{running.url}/traffic/other", timeout=30).json()["split"]
        assert other == [{"model": "wine:2.0.0", "weight": 1.0}]  # the file changed it
    finally:
        running.stop()
