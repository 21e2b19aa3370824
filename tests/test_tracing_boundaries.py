"""Traces across the server's process boundaries, received by a real OTLP receiver (``otlp.Receiver``): the model
span of a model in worker processes (``processes = N``) and in another environment (``python = ...``) a child of
the server's span of the call; a job's span tree in the job's process (spawned, and in the model's worker
interpreter), linked to the request that started it; another environment without the ``otel`` extra, a model
that fails to load saying what to install."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .documentation import block, page
from .helpers import wait_until
from .otlp import Receiver, Span
from .venvs import INSTALLED, Server, Venv, build_wheels, copy_source

pytestmark = pytest.mark.server

#: The page's example: iris in two worker processes, traced (iris-proba in the server's threads: its jobs run in a
#: spawned process).
CONFIG = block("toml", "each predict's model span", page("observability/tracing.md"))
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def serve(directory: Path, config: str, receiver: Receiver, *args: str) -> Server:
    """A traced ``stevedore-server run`` of this environment (``args`` added), with its jobs' database in
    ``directory``; ready."""
    path = directory / "server.toml"
    path.write_text(config)
    args = (*args, "--config", str(path), "--state-dir", str(directory / "state"))
    running = Server.start(Venv(Path(sys.prefix), ()), directory / "server.log", *args, **receiver.environment())
    try:
        running.wait_for("/readyz", deadline=120)
    except AssertionError:
        running.stop()
        raise
    return running


@pytest.fixture(scope="module")
def server(otlp: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(tmp_path_factory.mktemp("boundaries"), CONFIG, otlp, "--plugins", "stevedore-sklearn-logreg")
    try:
        yield running
    finally:
        running.stop()


def traceparent(sampled: bool = True) -> tuple[str, str]:
    """A caller's ``traceparent`` header (sampled, or not), and its trace id: the trace to find the request's
    spans in."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}", trace_id


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def one_tree_with_a_worker_span(trace_id: str) -> Callable[[list[Span]], bool]:
    """Whether the spans of ``trace_id`` received make one tree (the request's server span its root: it ends, and
    is exported, last) holding a worker process's span (it names its pid)."""

    def holds(spans: list[Span]) -> bool:
        in_trace = [one for one in spans if one.trace_id == trace_id]
        ids = {one.span_id for one in in_trace}
        roots = [one for one in in_trace if one.parent_id not in ids]
        in_worker = [one for one in in_trace if "process.pid" in one.attributes]
        server_root = len(roots) == 1 and roots[0].kind == "server" and "process.pid" not in roots[0].attributes
        return server_root and bool(in_worker) and in_worker[0].parent_id in ids

    return holds


def assert_child_across_the_boundary(
    receiver: Receiver, server: Server, trace_id: str, model_name: str = "iris", parent_name: str = "model"
) -> Span:
    """The worker's model span is a child of the server's span of the call (``parent_name``), in the request's one
    trace; the worker's span."""
    receiver.wait(one_tree_with_a_worker_span(trace_id), f"one tree with a worker's span in trace {trace_id}")
    spans = receiver.trace(trace_id)
    model = next(one for one in spans if "process.pid" in one.attributes)
    assert model.name == "model" and model.kind == "server", model
    assert model.attributes["stevedore.model.name"] == model_name
    assert model.attributes["process.pid"] in children(server.process.pid), "not one of the server's workers"
    parent = next(one for one in spans if one.span_id == model.parent_id)
    assert parent.name == parent_name and "process.pid" not in parent.attributes  # the server's span of the call
    return model


def test_the_model_span_of_a_model_in_worker_processes_is_a_child_of_the_servers(
    server: Server, otlp: Receiver
) -> None:
    header, trace_id = traceparent()
    response = httpx.post(f"{server.url}/models/iris/predict", json=[SETOSA], headers={"traceparent": header})
    assert response.status_code == 200, response.text
    assert_child_across_the_boundary(otlp, server, trace_id)


def test_a_request_without_traceparent_crosses_in_the_trace_the_server_starts(server: Server, otlp: Receiver) -> None:
    response = httpx.post(f"{server.url}/models/iris/predict", json=[SETOSA, SETOSA])
    assert response.status_code == 200, response.text
    trace_id = response.headers["traceparent"].split("-")[1]
    assert_child_across_the_boundary(otlp, server, trace_id)


def submit_job(server: Server, model: str, sampled: bool = True) -> tuple[str, str]:
    """A long predict of ``model`` as a job, submitted under a caller's trace (``sampled`` or not); the job's id
    and that trace's id, once the job has succeeded."""
    header, trace_id = traceparent(sampled)
    response = httpx.post(f"{server.url}/models/{model}/jobs/predict", json=[SETOSA], headers={"traceparent": header})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def finished() -> bool:
        return httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] not in ("queued", "running")

    wait_until(finished, f"job {job_id} to finish", explain=server.log)
    assert httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] == "succeeded"
    return job_id, trace_id


def job_tree(receiver: Receiver, job_id: str, trace_id: str) -> list[str]:
    """The job's span: a child of the server span of the request that submitted it, in its trace, and linked to
    it; the names of its children."""
    spans = receiver.wait(
        lambda spans: any(one.name == "job" and one.attributes.get("stevedore.job.id") == job_id for one in spans),
        f"the span of job {job_id}",
    )
    job = next(one for one in spans if one.name == "job" and one.attributes.get("stevedore.job.id") == job_id)
    request = [one for one in receiver.trace(trace_id) if one.kind == "server"]
    assert len(request) == 1, request  # the POST's server span
    assert (job.trace_id, job.parent_id, job.kind) == (trace_id, request[0].span_id, "consumer")
    assert [(link.trace_id, link.span_id) for link in job.links] == [(trace_id, request[0].span_id)]
    assert job.attributes["stevedore.job.kind"] == "predict"
    receiver.wait(lambda spans: any(one.parent_id == job.span_id for one in spans), "the job's children")
    children = sorted((one for one in receiver.trace(trace_id) if one.parent_id == job.span_id), key=start)
    return [one.name for one in children]


def start(one: Span) -> int:
    return one.start_ns


def job_span_of(job_id: str) -> Callable[[list[Span]], bool]:
    return lambda spans: any(one.name == "job" and one.attributes.get("stevedore.job.id") == job_id for one in spans)


def test_a_jobs_spans_in_its_process_link_to_the_request_that_started_it(server: Server, otlp: Receiver) -> None:
    job_id, trace_id = submit_job(server, "iris-proba")
    assert job_tree(otlp, job_id, trace_id) == ["model"]


def test_a_job_is_sampled_as_the_request_that_started_it_was(server: Server, otlp: Receiver) -> None:
    unsampled, unsampled_trace = submit_job(server, "iris-proba", sampled=False)
    sampled, _ = submit_job(server, "iris-proba")
    otlp.wait(job_span_of(sampled), f"the span of job {sampled}")
    assert not job_span_of(unsampled)(otlp.spans_now())
    assert otlp.trace(unsampled_trace) == []


def test_a_job_in_a_models_worker_interpreter_has_its_load_and_model_spans(server: Server, otlp: Receiver) -> None:
    job_id, trace_id = submit_job(server, "iris")
    assert job_tree(otlp, job_id, trace_id) == ["load", "model"]


def core_wheel(wheelhouse: Path) -> Path:
    return next(wheelhouse.glob("stevedore_server-*.whl"))


@pytest.fixture(scope="module")
def otel_venv(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """Another environment with the core and its ``otel`` extra (from the index: the wheelhouse has the core's
    dependencies only), the example plugin and the CPU-bound test plugin (``spin``, which streams and fails)."""
    root = tmp_path_factory.mktemp("otel-env")
    build_wheels([copy_source(INSTALLED / "cpu", root / "cpu")], root / "wheels", wheelhouse)
    environment = Venv.create(root / "venv", wheelhouse, root / "wheels")
    environment.install_from_index(
        f"stevedore-server[otel] @ {core_wheel(wheelhouse).as_uri()}", "stevedore-sklearn-logreg", "stevedore-test-cpu"
    )
    return environment


@pytest.mark.venv
def test_model_spans_cross_into_another_environment(otel_venv: Venv, otlp: Receiver, tmp_path: Path) -> None:
    """A predict, a stream and a model's failure of models under another interpreter: each time the worker's span
    (the failure's with its error status) is a child of the server's."""
    config = f'[models.iris]\npython = "{otel_venv.path}"\n\n[models.spin]\npython = "{otel_venv.path}"\n'
    running = serve(tmp_path, config, otlp)
    try:
        header, trace_id = traceparent()
        response = httpx.post(f"{running.url}/models/iris/predict", json=[SETOSA], headers={"traceparent": header})
        assert response.status_code == 200, response.text
        model = assert_child_across_the_boundary(otlp, running, trace_id)
        assert Path(f"/proc/{model.attributes['process.pid']}/exe").resolve() == otel_venv.python.resolve()

        header, trace_id = traceparent()
        url = f"{running.url}/models/spin/predict/stream"
        with httpx.stream("POST", url, json=[10, 20], headers={"traceparent": header}, timeout=30) as streamed:
            assert streamed.status_code == 200 and streamed.read().count(b'"total"') == 2
        # The request's span (the "stream" span, which its items' events are on, is never the current one).
        parent = "POST /models/{name}/predict/stream"
        model = assert_child_across_the_boundary(otlp, running, trace_id, "spin", parent_name=parent)
        assert model.attributes["stevedore.action"] == "stream" and model.status != "error"

        header, trace_id = traceparent()
        failed = httpx.post(f"{running.url}/models/spin/predict", json=[-1], headers={"traceparent": header})
        assert failed.status_code == 500, failed.text
        model = assert_child_across_the_boundary(otlp, running, trace_id, "spin")
        assert model.status == "error"
    finally:
        running.stop()


@pytest.mark.venv
def test_another_environment_without_the_otel_extra_fails_its_model_saying_what_to_install(
    wheelhouse: Path, otlp: Receiver, tmp_path: Path
) -> None:
    plain = Venv.create(tmp_path / "plain", wheelhouse)
    plain.install("stevedore-server", "stevedore-sklearn-logreg")
    config = tmp_path / "server.toml"
    config.write_text(f'[models.iris]\npython = "{plain.path}"\n')
    running = Server.start(
        Venv(Path(sys.prefix), ()), tmp_path / "server.log", "--plugins", "stevedore-sklearn-logreg",
        "--config", str(config), **otlp.environment(),
    )  # fmt: skip
    try:
        health = running.wait_for("/healthz", status=503, deadline=120).json()  # serving, one model failed
        reason = next(model["reason"] for model in health["models"] if model["name"] == "iris")
        assert "pip install 'stevedore-server[otel]'" in reason and str(plain.python) in reason, reason
        answer = httpx.post(f"{running.url}/models/iris/predict", json=[SETOSA])
        assert answer.status_code == 503, answer.text
    finally:
        running.stop()
