"""Pipelines on a real server: every node type and condition operator, time-outs, soft and hard failures, the
pipelines refused at startup (and the models still serving), a plugin's pipeline, and their catalogue."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from .pipelines_server import ISSUE, serve
from .venvs import Server

pytestmark = pytest.mark.server

#: The pipelines beside the issue's two: every node type and operator, failures, and the refused ones.
MORE = """
[pipelines.mean]
type = "ensemble"
reducer = "mean"
steps = [{ model = "hooked-sum" }, { model = "row-max" }]

[pipelines.vote]
type = "ensemble"
reducer = "vote"
steps = [{ model = "iris" }, { model = "twos", name = "a" }, { model = "twos", name = "b" }]

[pipelines.by-key]
type = "ensemble"
steps = [{ model = "hooked-sum" }, { model = "row-max", name = "largest" }]

[pipelines.side-by-side]
type = "ensemble"
reducer = "concatenate"
steps = [{ model = "hooked-sum" }, { model = "row-max" }]

[pipelines.split]
type = "splitter"
steps = [{ model = "hooked-sum", weight = 1 }, { model = "row-max", weight = 1 }]

[pipelines.ops]
type = "switch"
steps = [
  { model = "twos", name = "eq", condition = { pointer = "/0/0", op = "==", value = 1 } },
  { model = "twos", name = "in", condition = { pointer = "/0/0", op = "in", value = [2, 3] } },
  { model = "twos", name = "lt", condition = { pointer = "/0/0", op = "<", value = 0 } },
  { model = "twos", name = "le", condition = { pointer = "/0/0", op = "<=", value = 0 } },
  { model = "twos", name = "gt", condition = { pointer = "/0/0", op = ">", value = 100 } },
  { model = "twos", name = "ge", condition = { pointer = "/0/0", op = ">=", value = 100 } },
  { model = "twos", name = "ne", condition = { pointer = "/0/0", op = "!=", value = 50 } },
  { model = "twos", name = "default" },
]

[pipelines.no-default]
type = "switch"
steps = [{ model = "hooked-sum", condition = { pointer = "/0/0", op = "==", value = 1 } }]

[pipelines.on-response]
root = "first"
[pipelines.on-response.nodes.first]
type = "sequence"
steps = [{ model = "hooked-sum" }, { node = "then", data = "$request" }]
[pipelines.on-response.nodes.then]
type = "switch"
steps = [
  { model = "row-max", condition = { source = "$response", pointer = "/0", op = ">", value = 10 } },
  { model = "twos" },
]

[pipelines.pointer]
root = "first"
[pipelines.pointer.nodes.first]
type = "sequence"
steps = [{ node = "both" }, { model = "hooked-sum", data = "$response/again" }]
[pipelines.pointer.nodes.both]
type = "ensemble"
steps = [{ model = "iris-proba" }, { model = "iris-proba", name = "again" }]

[pipelines.hard-timeout]
type = "sequence"
steps = [{ model = "sleepy", timeout = 0.5 }]

[pipelines.soft-timeout]
type = "sequence"
steps = [{ model = "hooked-sum" }, { model = "sleepy", data = "$request", timeout = 0.5, dependency = "soft" }]

[pipelines.hard-failure]
type = "sequence"
steps = [{ model = "hooked-sum" }, { model = "picky", data = "$request" }]

[pipelines.soft-failure]
type = "sequence"
steps = [{ model = "hooked-sum" }, { model = "picky", data = "$request", dependency = "soft" }]

[pipelines.bad-input]
root = "first"
[pipelines.bad-input.nodes.first]
type = "sequence"
steps = [{ model = "hooked-sum" }, { node = "pick", data = "$request" }]
[pipelines.bad-input.nodes.pick]
type = "switch"
steps = [{ model = "iris", condition = { pointer = "/0/0", op = "==", value = 99 } }, { model = "hooked-sum" }]

[pipelines.mismatch]
type = "sequence"
steps = [{ model = "labeller" }, { model = "hooked-sum" }]

[pipelines.cycle]
root = "a"
[pipelines.cycle.nodes.a]
type = "sequence"
steps = [{ model = "hooked-sum" }, { node = "b" }]
[pipelines.cycle.nodes.b]
type = "sequence"
steps = [{ node = "a" }]

[pipelines.unknown-model]
type = "sequence"
steps = [{ model = "hooked-summ" }]

[pipelines.fixture-fails]
type = "sequence"
steps = [{ model = "iris-proba" }, { model = "iris" }]

[pipelines.iris]
type = "sequence"
steps = [{ model = "iris-proba" }]

[pipelines.slow]
type = "sequence"
steps = [{ model = "sleepy" }]

[pipelines.nan]
type = "sequence"
steps = [{ model = "hooked-sum" }, { model = "ratio", data = "$request" }]
"""
SETTINGS = ISSUE + MORE

IRIS = [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2]]
FAILED = {"mismatch", "cycle", "unknown-model", "fixture-fails", "iris"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("pipelines"), SETTINGS)
    try:
        yield running
    finally:
        running.stop()


def predict(server: Server, name: str, body: Any, steps: bool = False) -> httpx.Response:
    return httpx.post(f"{server.url}/pipelines/{name}/predict", json=body, params={"steps": steps}, timeout=30)


def predictions(server: Server, name: str, body: Any) -> Any:
    response = predict(server, name, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["pipeline"] == answer["model_name"] == name
    return answer["predictions"]


def test_the_issues_sequence_sums_each_rows_probabilities(server: Server) -> None:
    sums = predictions(server, "iris-sum", IRIS)
    assert len(sums) == 2 and all(math.isclose(total, 1.0) for total in sums)


def test_steps_are_shown_when_asked(server: Server) -> None:
    answer = predict(server, "iris-sum", IRIS, steps=True).json()
    assert [(s["node"], s["model"], s["outcome"]) for s in answer["steps"]] == [
        ("root", "iris-proba", "ok"),
        ("root", "hooked-sum", "ok"),
    ]
    assert len(answer["steps"][0]["predictions"]) == 2 and len(answer["steps"][0]["predictions"][0]) == 3
    assert answer["steps"][1]["predictions"] == answer["predictions"]
    assert all(step["seconds"] >= 0 and step["model_version"] == "1" for step in answer["steps"])
    assert "steps" not in predict(server, "iris-sum", IRIS).json()


def test_the_issues_router_switches_on_the_request(server: Server) -> None:
    chained = predict(server, "router", IRIS, steps=True).json()  # 5.1 > 5: the chain
    assert [step["model"] for step in chained["steps"]] == ["iris-proba", "hooked-sum"]
    assert all(math.isclose(total, 1.0) for total in chained["predictions"])
    small = predict(server, "router", [[4.9, 3.0, 1.4, 0.2]], steps=True).json()  # else iris, the labels
    assert [step["model"] for step in small["steps"]] == ["iris"]
    assert small["predictions"] == [0]


@pytest.mark.parametrize(
    ("first", "branch"),
    [(1, "eq"), (2, "in"), (3, "in"), (-1, "lt"), (0, "le"), (101, "gt"), (100, "ge"), (7, "ne"), (50, "default")],
)
def test_every_condition_operator(server: Server, first: float, branch: str) -> None:
    answer = predict(server, "ops", [[first, 1]], steps=True).json()
    assert [step["step"] for step in answer["steps"]] == [branch]


def test_a_switch_without_a_matching_step_is_a_clear_422(server: Server) -> None:
    response = predict(server, "no-default", [[5, 5]])
    assert response.status_code == 422
    assert "no step of switch node 'root'" in response.json()["error"]


def test_a_condition_on_the_previous_response(server: Server) -> None:
    assert predictions(server, "on-response", [[5, 6]]) == [6]  # hooked-sum gave [11], over 10: row-max
    assert predictions(server, "on-response", [[1, 2]]) == [2]  # [3]: twos


def test_ensembles_merge_by_key_or_reduce(server: Server) -> None:
    rows = [[1, 2], [3, 5]]
    assert predictions(server, "by-key", rows) == {"hooked-sum": [3, 8], "largest": [2, 5]}
    assert predictions(server, "mean", rows) == [2.5, 6.5]
    assert predictions(server, "side-by-side", rows) == [[3, 2], [8, 5]]
    assert predictions(server, "vote", IRIS) == [2, 2]  # twos outvote iris's 0


def test_a_json_pointer_into_the_response(server: Server) -> None:
    sums = predictions(server, "pointer", IRIS)
    assert len(sums) == 2 and all(math.isclose(total, 1.0) for total in sums)


def test_a_splitter_runs_one_step_by_weight(server: Server) -> None:
    chosen = {predict(server, "split", [[1, 2]], steps=True).json()["steps"][0]["model"] for _ in range(40)}
    assert chosen == {"hooked-sum", "row-max"}  # each at 1/2: missing one in 40 is 2**-39


def test_a_hard_steps_time_out_is_a_504_naming_it(server: Server) -> None:
    response = predict(server, "hard-timeout", [[3, 0]])
    assert response.status_code == 504, response.text
    assert "pipeline 'hard-timeout', node 'root', step 'sleepy': timed out after 0.5 s" in response.json()["error"]


def test_a_soft_steps_time_out_passes_on_the_previous_answer(server: Server) -> None:
    answer = predict(server, "soft-timeout", [[3, 4]], steps=True).json()
    assert answer["predictions"] == [7]
    assert [(s["model"], s["outcome"]) for s in answer["steps"]] == [("hooked-sum", "ok"), ("sleepy", "timeout")]
    assert answer["steps"][1]["error"] == "timed out after 0.5 s"


def test_a_hard_failure_fails_the_pipeline_with_the_steps_status(server: Server) -> None:
    failed = predict(server, "hard-failure", [[200, 1]])
    assert failed.status_code == 500
    assert "model 'picky' version '1' failed to predict" in failed.json()["error"]
    assert "Traceback" not in failed.text
    refused = predict(server, "bad-input", [[99, 2]])  # to iris, whose schema wants 4 numbers a row
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("pipeline 'bad-input', node 'pick', step 'iris': ")


def test_a_soft_failure_is_recorded_and_skipped(server: Server) -> None:
    answer = predict(server, "soft-failure", [[200, 1]], steps=True).json()
    assert answer["predictions"] == [201]
    assert answer["steps"][1]["outcome"] == "skipped"
    assert "model 'picky' version '1' failed to predict" in answer["steps"][1]["error"]


def test_an_answer_json_cannot_carry_is_the_models_failure(server: Server) -> None:
    # written as null before: a 200 the client could not tell from an answer, where the model's route says 500
    direct = httpx.post(f"{server.url}/models/ratio/predict", json=[[0, 0]], timeout=10)
    failed = predict(server, "nan", [[0, 0]])
    assert direct.status_code == failed.status_code == 500, failed.text
    assert "model 'ratio' version '1' failed to predict" in failed.json()["error"]
    assert predictions(server, "nan", [[3, 2]]) == [1.5]


def test_pipelines_that_fail_their_check_are_listed_with_why(server: Server) -> None:
    listed = {entry["name"]: entry for entry in httpx.get(f"{server.url}/pipelines").json()["pipelines"]}
    assert {name for name, entry in listed.items() if entry["state"] == "failed"} == FAILED
    reasons = {name: listed[name]["reason"] for name in FAILED}
    assert "does not fit the predict schema of 'hooked-sum'" in reasons["mismatch"]
    assert "at /items it gives string, the next takes array" in reasons["mismatch"]
    assert "cycle: a -> b -> a" in reasons["cycle"]
    assert "no model named 'hooked-summ'; did you mean 'hooked-sum'?" in reasons["unknown-model"]
    assert reasons["fixture-fails"].startswith("self-test on the predict fixture of 'iris-proba' failed:")
    assert "a pipeline may not take a model's name" in reasons["iris"]


def test_a_failed_pipeline_answers_503_and_the_models_keep_serving(server: Server) -> None:
    response = predict(server, "cycle", [[1, 2]])
    assert response.status_code == 503
    assert "pipeline 'cycle' is not ready: its nodes form a cycle" in response.json()["error"]
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    model = httpx.post(f"{server.url}/models/hooked-sum/predict", json=[[1, 2]])
    assert model.json()["predictions"] == [3]
    catalogue = {entry["name"] for entry in httpx.get(f"{server.url}/models").json()["models"]}
    assert "iris-sum" not in catalogue  # /models lists models only


def test_an_unknown_pipeline_is_a_404_with_suggestions(server: Server) -> None:
    response = predict(server, "iris-summ", IRIS)
    assert response.status_code == 404
    assert "no pipeline named 'iris-summ'; did you mean 'iris-sum'" in response.json()["error"]


def test_bad_requests_get_clear_errors(server: Server) -> None:
    invalid = predict(server, "iris-sum", [["a"]])
    assert invalid.status_code == 422 and "step 'iris-proba'" in invalid.json()["error"]
    not_json = httpx.post(f"{server.url}/pipelines/iris-sum/predict", content=b"{", timeout=10)
    assert not_json.status_code == 400
    flag = httpx.post(f"{server.url}/pipelines/iris-sum/predict?steps=maybe", json=IRIS, timeout=10)
    assert flag.status_code == 400 and "true or false" in flag.json()["error"]


def test_a_plugins_pipeline_is_served(server: Server) -> None:
    entry = httpx.get(f"{server.url}/pipelines/shipped-sum").json()
    assert entry["state"] == "ready"
    assert entry["source"].startswith("entry point 'shipped' (stevedore.pipelines) of stevedore-test-pipeline")
    assert predictions(server, "shipped-sum", [[1, 2], [3, 5]]) == [5, 13]  # sum + largest


def test_its_schema_and_catalogue_entry(server: Server) -> None:
    schema = httpx.get(f"{server.url}/pipelines/iris-sum/schemas/predict").json()
    iris_schema = httpx.get(f"{server.url}/models/iris-proba/schemas/predict").json()
    assert schema == iris_schema
    entry = httpx.get(f"{server.url}/pipelines/router").json()
    assert entry["nodes"] == {
        "pick": {"type": "switch", "steps": ["chain", "iris"]},
        "chain": {"type": "sequence", "steps": ["iris-proba", "hooked-sum"]},
    }
    assert entry["links"]["predict"] == "/pipelines/router/predict"


def test_metrics_count_pipelines_and_steps(server: Server) -> None:
    predictions(server, "iris-sum", IRIS)
    predict(server, "soft-failure", [[200, 1]])
    text = httpx.get(f"{server.url}/metrics").text
    assert 'stevedore_pipeline_requests_total{outcome="ok",pipeline="iris-sum"}' in text
    assert 'stevedore_pipeline_duration_seconds_count{pipeline="iris-sum"}' in text
    assert 'stevedore_pipeline_steps_total{model="hooked-sum",node="root",outcome="ok",pipeline="iris-sum"}' in text
    assert 'stevedore_pipeline_steps_total{model="picky",node="root",outcome="skipped",pipeline="soft-failure"}' in text
    # each step also counts as its model's inference, as a direct call does
    assert 'stevedore_inferences_total{action="predict",model="hooked-sum",version="1"}' in text


def v2_input(server: Server) -> dict[str, Any]:
    """iris-proba's V2 input (the pipeline's first model), with the two rows of ``IRIS``."""
    spec = httpx.get(f"{server.url}/v2/models/iris-proba").json()["inputs"][0]
    return {"name": spec["name"], "datatype": "FP64", "shape": [2, 4], "data": [x for row in IRIS for x in row]}


def test_v2_rest_infers_a_pipeline_under_its_name(server: Server) -> None:
    response = httpx.post(f"{server.url}/v2/models/iris-sum/infer", json={"inputs": [v2_input(server)]}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "iris-sum"
    output = httpx.get(f"{server.url}/v2/models/hooked-sum").json()["outputs"][0]["name"]
    assert answer["outputs"][0]["name"] == output
    assert np.allclose(answer["outputs"][0]["data"], [1.0, 1.0])
    no_tensors = httpx.post(f"{server.url}/v2/models/by-key/infer", json={"inputs": [v2_input(server)]})
    assert no_tensors.status_code == 400 and "pipeline 'by-key' has no V2 interface" in no_tensors.json()["error"]
    failed = httpx.post(f"{server.url}/v2/models/cycle/infer", json={"inputs": [v2_input(server)]})
    assert failed.status_code == 503


def test_v2_rest_bounds_a_pipeline_by_its_timeout_parameter(server: Server) -> None:
    # the parameter (microseconds, as Triton's) was read for a model's infer only: the pipeline ran its 2 s
    spec = httpx.get(f"{server.url}/v2/models/sleepy").json()["inputs"][0]
    given = {"name": spec["name"], "datatype": "FP64", "shape": [1, 2], "data": [2, 0]}
    body = {"inputs": [given], "parameters": {"timeout": 300_000}}
    started = time.monotonic()
    response = httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=30)
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 1.5


def test_v2_grpc_infers_a_pipeline_under_its_name(server: Server) -> None:
    spec = v2_input(server)
    given = triton_grpc.InferInput(spec["name"], [2, 4], "FP64")
    given.set_data_from_numpy(np.asarray(IRIS, dtype=np.float64))
    output = httpx.get(f"{server.url}/v2/models/hooked-sum").json()["outputs"][0]["name"]
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        result = client.infer("iris-sum", [given])
        assert result.get_response().model_name == "iris-sum"
        assert np.allclose(result.as_numpy(output), [1.0, 1.0])
        with pytest.raises(InferenceServerException, match=r"is not ready"):
            client.infer("cycle", [given])
    finally:
        client.close()


def test_the_console_lists_the_pipelines(server: Server) -> None:
    text = html.unescape(httpx.get(f"{server.url}/console/fragments/models").text)
    assert '<tr data-pipeline="iris-sum" data-state="ready">' in text
    assert '<tr data-pipeline="cycle" data-state="failed">' in text
    assert "its nodes form a cycle: a -&gt; b -&gt; a" in httpx.get(f"{server.url}/console/fragments/models").text
    assert "POST /pipelines/iris-sum/predict" in text
