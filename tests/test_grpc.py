"""The Open Inference Protocol over gRPC against a real server, driven by NVIDIA's ``tritonclient.grpc``, the
standard health and reflection clients, and raw stubs of Triton's own service definition."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from stevedore_server.base.health import HealthChecks
from stevedore_server.base.lifecycle import Lifecycle
from stevedore_server.base.settings import Settings
from stevedore_server.core.served_models import Registry
from stevedore_server.frontends.grpc_health import HealthService

from .helpers import wait_until
from .venvs import Server, Venv

pytestmark = [pytest.mark.venv, pytest.mark.server]

MIB = 1024 * 1024
SETOSA = (5.1, 3.5, 1.4, 0.2)
#: The sleeper may run one call at a time, none waiting, for at most a second: the limits' statuses on demand.
LIMITS = """
[models.sleeper]
timeout = 1.0
max_concurrency = 1
max_queue = 0
"""


def start(venv: Venv, directory: Path, *args: str, config: str = "", **env: str) -> Server:
    if config:
        (directory / "stevedore.toml").write_text(config)
        args = (*args, "--config", str(directory / "stevedore.toml"))
    server = Server.start(venv, directory / "server.log", *args, **env)
    try:
        server.wait_for("/readyz")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def served(ops_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the example, tensors and sleeper plugins, with the sleeper's limits tight."""
    server = start(ops_venv, tmp_path_factory.mktemp("grpc"), config=LIMITS)
    yield server
    server.stop()


@pytest.fixture
def client(served: Server) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(served.grpc_target) as grpc_client:
        yield grpc_client


def stub(server: Server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    """A raw stub of Triton's own service definition: what a client generated from it sends."""
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))


def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


# -- health, metadata and infer, as the HTTP client sees them ------------------------------


def test_live_ready_and_metadata_answer_as_over_http(served: Server, client: triton_grpc.InferenceServerClient) -> None:
    http = triton_http.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mixed") and client.is_model_ready("iris", "1")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata == {
        **http.get_server_metadata(),
        "extensions": ["binary_tensor_data", "model_repository", "statistics", "model_configuration"],
    }
    for name in ("mixed", "iris"):
        over_grpc = client.get_model_metadata(name, as_json=True)
        over_http = http.get_model_metadata(name)
        for tensors in (over_grpc["inputs"], over_grpc["outputs"]):
            for tensor in tensors:
                tensor["shape"] = [int(dim) for dim in tensor["shape"]]  # int64s are strings in protobuf's JSON
        assert over_grpc == over_http
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


ROWS = st.integers(min_value=1, max_value=6)
WORD = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
FLOAT = st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32, allow_nan=False)
INT = st.integers(min_value=-(2**62), max_value=2**62 - 1)


@st.composite
def mixed_inputs(draw: st.DrawFn) -> dict[str, np.ndarray[Any, Any]]:
    rows = draw(ROWS)
    return {
        "floats": np.array(draw(st.lists(FLOAT, min_size=rows * 3, max_size=rows * 3)), np.float32).reshape(rows, 3),
        "counts": np.array(draw(st.lists(INT, min_size=rows, max_size=rows)), np.int64),
        "flags": np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), bool),
        "words": np.array([w.encode() for w in draw(st.lists(WORD, min_size=rows, max_size=rows))], dtype=object),
    }


DATATYPES = {"floats": "FP32", "counts": "INT64", "flags": "BOOL", "words": "BYTES"}
OUTPUTS = ("doubled", "next", "negated", "shouted")


def infer(module: Any, client: Any, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), DATATYPES[name])
        if module is triton_http:
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer("mixed", tensors)
    return {name: result.as_numpy(name) for name in OUTPUTS}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inputs=mixed_inputs())
def test_infer_answers_fp32_int64_bool_bytes_as_over_http(
    served: Server, client: triton_grpc.InferenceServerClient, inputs: dict[str, np.ndarray[Any, Any]]
) -> None:
    over_grpc = infer(triton_grpc, client, inputs)
    over_http = infer(triton_http, triton_http.InferenceServerClient(served.url.removeprefix("http://")), inputs)
    for name in OUTPUTS:
        assert over_grpc[name].dtype == over_http[name].dtype
        np.testing.assert_array_equal(over_grpc[name], over_http[name])
    np.testing.assert_array_equal(over_grpc["doubled"], inputs["floats"] * 2)
    np.testing.assert_array_equal(over_grpc["next"], inputs["counts"] + 1)
    np.testing.assert_array_equal(over_grpc["negated"], ~inputs["flags"])
    assert [w.decode() for w in over_grpc["shouted"]] == [w.decode().upper() for w in inputs["words"]]


def test_text_ending_in_nul_characters_comes_back_whole(
    served: Server, client: triton_grpc.InferenceServerClient
) -> None:
    """A model's list of strings keeps its trailing NULs (a fixed-width NumPy text array would drop them)."""
    inputs = {
        "floats": np.zeros((3, 3), np.float32),
        "counts": np.zeros(3, np.int64),
        "flags": np.zeros(3, bool),
        "words": np.array([b"\x00", b"a\x00\x00", b"b"], dtype=object),
    }
    http = triton_http.InferenceServerClient(served.url.removeprefix("http://"))
    for module, connection in ((triton_grpc, client), (triton_http, http)):
        assert infer(module, connection, inputs)["shouted"].tolist() == [b"\x00", b"A\x00\x00", b"B"]


def test_typed_contents_are_answered_with_typed_contents(served: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="mixed", id="typed-1")
    request.inputs.add(name="floats", datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend([1, 2, 3, 4, 5, 6])
    request.inputs.add(name="counts", datatype="INT64", shape=[2]).contents.int64_contents.extend([7, -8])
    request.inputs.add(name="flags", datatype="BOOL", shape=[2]).contents.bool_contents.extend([True, False])
    request.inputs.add(name="words", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b"\xc3\xa9"])
    request.outputs.add(name="next")
    request.outputs.add(name="shouted")
    response = stub(served).ModelInfer(request)
    assert (response.model_name, response.model_version, response.id) == ("mixed", "1", "typed-1")
    assert not response.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("next", "INT64", [2]), ("shouted", "BYTES", [2])
    ]  # fmt: skip
    assert list(response.outputs[0].contents.int64_contents) == [8, -7]
    assert list(response.outputs[1].contents.bytes_contents) == [b"AB", "É".encode()]


def test_raw_contents_of_a_client_generated_from_the_protocol(served: Server) -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="1")
    request.inputs.add(name="input-0", datatype="FP64", shape=[2, 4])
    request.raw_input_contents.append(rows.tobytes())
    response = stub(served).ModelInfer(request)
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [0, 2]
    assert not response.outputs[0].HasField("contents")


def big_request(floats: int) -> Any:
    """A request to the tensors plugin whose FP32 input has ``floats`` elements."""
    request = service_pb2.ModelInferRequest(model_name="mixed")
    request.inputs.add(name="floats", datatype="FP32", shape=[floats // 3, 3])
    request.inputs.add(name="counts", datatype="INT64", shape=[1])
    request.inputs.add(name="flags", datatype="BOOL", shape=[1])
    request.inputs.add(name="words", datatype="BYTES", shape=[1])
    request.raw_input_contents.extend(
        [np.ones(floats, "<f4").tobytes(), np.int64(1).tobytes(), b"\x01", b"\x01\x00\x00\x00a"]
    )
    request.outputs.add(name="next")
    return request


def test_a_12_mib_tensor_is_served_and_one_over_the_limit_is_resource_exhausted(
    served: Server, client: triton_grpc.InferenceServerClient
) -> None:
    service = stub(served)
    twelve_mib = big_request(12 * MIB // 4)
    assert twelve_mib.ByteSize() > 12 * MIB
    response = service.ModelInfer(twelve_mib, timeout=120)
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [2]
    too_big = big_request(17 * MIB // 4)  # over max_body_size (16 MiB)
    assert status_of(lambda: service.ModelInfer(too_big)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.is_server_live()


# -- errors ---------------------------------------------------------------------------------------------


def iris_request(**changes: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model_name", "iris"))
    tensor = request.inputs.add(
        name="input-0", datatype=changes.pop("datatype", "FP64"), shape=changes.pop("shape", [1, 4])
    )
    tensor.contents.fp64_contents.extend(changes.pop("values", [5.1, 3.5, 1.4, 0.2]))
    assert not changes
    return request


def sleeper_request(seconds: float) -> Any:
    request = service_pb2.ModelInferRequest(model_name="sleeper")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1]).contents.fp64_contents.append(seconds)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (iris_request(model_name="nope"), grpc.StatusCode.NOT_FOUND, "no model named 'nope'"),
        (iris_request(shape=(1, 3), values=(1, 2, 3)), grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
        (iris_request(datatype="FP16"), grpc.StatusCode.INVALID_ARGUMENT, "send raw_input_contents"),
        (iris_request(values=(1.0,)), grpc.StatusCode.INVALID_ARGUMENT, "holds 4 elements but contents has 1"),
        (iris_request(values=(-1.0, 1, 1, 1)), grpc.StatusCode.INVALID_ARGUMENT, "schema"),
        (service_pb2.ModelInferRequest(model_name="iris"), grpc.StatusCode.INVALID_ARGUMENT, "non-empty list"),
    ],
)
def test_a_client_mistake_gets_its_status_never_unknown(
    served: Server, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    try:
        stub(served).ModelInfer(request_)
    except grpc.RpcError as error:
        assert (error.code(), message in error.details()) == (code, True), error.details()
    else:
        assert code == grpc.StatusCode.OK


def refused_while_busy(service: service_pb2_grpc.GRPCInferenceServiceStub) -> tuple[Any, grpc.StatusCode]:
    """A sleeper call in flight, and the status of a call the sleeper refused while it ran that one.

    Nothing outside the server tells when it has admitted a call, so calls of no time follow the long one until
    one is refused. Which of two calls the server admits first is its own choice: a long call that ends before
    any follower is refused (followers that got in first took its place, or this machine was too slow for one to
    meet it) is sent again. Only a refusal ends the wait, so a sleeper refusing nothing fails it at the deadline.
    """
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        busy = service.ModelInfer.future(sleeper_request(0.3))
        while not busy.done():
            try:
                service.ModelInfer(sleeper_request(0))
            except grpc.RpcError as error:
                return busy, error.code()
    raise AssertionError("for 60 s, the sleeper refused no call made while another was in flight")


def test_limits_answer_unavailable_resource_exhausted_and_deadline_exceeded(
    served: Server, client: triton_grpc.InferenceServerClient
) -> None:
    service = stub(served)
    busy, refused = refused_while_busy(service)
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert busy.result().outputs
    # Last: the model's thread goes on sleeping after the client has its answer.
    assert status_of(lambda: service.ModelInfer(sleeper_request(1.5))) == grpc.StatusCode.DEADLINE_EXCEEDED

    client.unload_model("sleeper")
    try:
        assert status_of(lambda: service.ModelInfer(sleeper_request(0))) == grpc.StatusCode.UNAVAILABLE
        assert not client.is_model_ready("sleeper")
    finally:
        client.load_model("sleeper")
    assert client.is_model_ready("sleeper")
    assert "Traceback" not in served.log()


def test_request_ids_access_log_and_metrics(served: Server) -> None:
    _, call = stub(served).ModelInfer.with_call(iris_request(), metadata=[("x-request-id", "grpc-test-4711")])
    assert ("x-request-id", "grpc-test-4711") in call.trailing_metadata()
    with pytest.raises(grpc.RpcError) as caught:
        stub(served).ModelInfer(iris_request(model_name="nope"), metadata=[("x-request-id", "grpc-test-4712")])
    assert ("x-request-id", "grpc-test-4712") in caught.value.trailing_metadata()
    _, call = stub(served).ModelInfer.with_call(iris_request())
    made = dict(call.trailing_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{20}", made)

    log = served.log()
    assert re.search(r"\[grpc-test-4711\] 127\.0\.0\.1 \"GRPC /inference\.GRPCInferenceService/ModelInfer\" 0 ", log)
    assert re.search(r"\[grpc-test-4712\] .*ModelInfer\" 5 ", log)  # NOT_FOUND
    metrics = httpx.get(served.url + "/metrics").text
    ok = re.search(
        r'stevedore_grpc_requests_total\{code="OK",method="/inference.GRPCInferenceService/ModelInfer"\} (\S+)', metrics
    )
    assert ok and float(ok.group(1)) >= 2
    assert (
        'stevedore_grpc_requests_total{code="NOT_FOUND",method="/inference.GRPCInferenceService/ModelInfer"}' in metrics
    )
    assert "stevedore_grpc_request_duration_seconds_bucket" in metrics
    assert 'stevedore_inferences_total{action="predict",model="iris",version="1"}' in metrics


# -- health and reflection --------------------------------------------------------------------------------


def test_standard_health_service_for_the_server_and_each_model(served: Server) -> None:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(served.grpc_target))
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "inference.GRPCInferenceService", "iris", "mixed", "sleeper"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == serving, service
    assert status_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope"))) == grpc.StatusCode.NOT_FOUND
    watch = health.Watch(health_pb2.HealthCheckRequest(service="iris"))
    assert next(watch).status == serving
    watch.cancel()


def test_a_watch_ends_on_not_serving_when_the_drain_starts_while_its_status_is_computed() -> None:
    """The race CI met: SIGTERM came while the Watch awaited the health checks (which found all well), and the
    stream ended on the SERVING it had sent, so a load balancer watching it never heard of the drain."""
    lifecycle = Lifecycle()

    def check_during_which_sigterm_comes() -> tuple[bool, str]:
        lifecycle.drain()
        return True, "fine when it looked"

    registry = Registry(health_checks={"slow": check_during_which_sigterm_comes})
    checks = HealthChecks(registry.health_checks, lifecycle, anyio.CapacityLimiter(1))
    service = SimpleNamespace(
        server=SimpleNamespace(registry=registry, settings=Settings()), lifecycle=lifecycle, health=checks
    )
    health = HealthService(service)  # type: ignore[arg-type]

    async def statuses() -> list[int]:
        return [answer.status async for answer in health.watch(health_pb2.HealthCheckRequest(service=""))]

    answers = health_pb2.HealthCheckResponse
    assert asyncio.run(statuses()) == [answers.SERVING, answers.NOT_SERVING]


def test_reflection_describes_the_services(served: Server) -> None:
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(served.grpc_target))
    assert set(database.get_services()) == {
        "inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"
    }  # fmt: skip
    described = database.FindFileContainingSymbol("inference.ModelInferRequest")
    message = next(m for m in described.message_type if m.name == "ModelInferRequest")
    assert {f.name: f.number for f in message.field}["raw_input_contents"] == 7


# -- the model repository over gRPC ----------------------------------------------------------------------


def test_repository_index_load_and_unload(served: Server, client: triton_grpc.InferenceServerClient) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert {name: m.state for name, m in index.items()} == {
        "iris": "READY", "iris-proba": "READY", "mixed": "READY", "sleeper": "READY"
    }  # fmt: skip
    client.unload_model("mixed")
    try:
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["mixed"].state == "UNAVAILABLE" and index["mixed"].reason.startswith("not loaded")
        ready = service_pb2.RepositoryIndexRequest(ready=True)
        assert "mixed" not in {m.name for m in stub(served).RepositoryIndex(ready).models}
        assert not client.is_model_ready("mixed")
    finally:
        client.load_model("mixed")
    assert client.is_model_ready("mixed")
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("mixed", config='{"backend": "python"}')
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "installed plugin wheels" in caught.value.message()


class Statuses:
    """The statuses client threads met, counted under a lock (several threads count at once), and waited on."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = threading.Condition()

    def add(self, status: str) -> None:
        with self.changed:
            self.counts[status] += 1
            self.changed.notify_all()

    def wait_for_more(self, status: str, more: int, awaited: str) -> None:
        """Until ``more`` calls have met ``status`` from now on; fail naming what was ``awaited`` after a minute."""
        with self.changed:
            target = self.counts[status] + more
            if not self.changed.wait_for(lambda: self.counts[status] >= target, timeout=60):
                raise AssertionError(f"{more} more {status} not seen within 60 s {awaited}: {dict(self.counts)}")


def test_unload_and_load_under_grpc_load_answer_only_ok_or_unavailable(
    served: Server, client: triton_grpc.InferenceServerClient
) -> None:
    outcomes = Statuses()
    stop = threading.Event()

    def loop() -> None:
        service = stub(served)
        while not stop.is_set():
            try:
                service.ModelInfer(iris_request(), timeout=30)
                outcomes.add("OK")
            except grpc.RpcError as error:
                outcomes.add(error.code().name)

    clients = [threading.Thread(target=loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        for _ in range(3):
            client.unload_model("iris")
            outcomes.wait_for_more("UNAVAILABLE", 1, "once iris was unloaded")
            client.load_model("iris")
            # More than a call a client: at least one began after the unload, so the reloaded model answered it.
            outcomes.wait_for_more("OK", len(clients) + 1, "once iris was loaded again")
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    counts = outcomes.counts
    assert counts["OK"] and counts["UNAVAILABLE"] and set(counts) == {"OK", "UNAVAILABLE"}, counts
    assert client.is_model_ready("iris")


def test_a_kserve_client_naming_the_model_in_field_1_loads_it(served: Server) -> None:
    """KServe's proto puts the model name of a load request in field 1, where Triton's has repository_name."""
    stub(served).RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(repository_name="iris"))
    assert stub(served).ModelReady(service_pb2.ModelReadyRequest(name="iris")).ready


# -- API keys --------------------------------------------------------------------------------------------


def test_api_keys_as_bearer_metadata(ops_venv: Venv, tmp_path: Path) -> None:
    server = start(ops_venv, tmp_path, STEVEDORE_API_KEYS="sesame")
    try:
        service = stub(server)
        for call in (
            lambda: service.ModelInfer(iris_request()),
            lambda: service.ModelInfer(iris_request(), metadata=[("authorization", "Bearer wrong")]),
            lambda: service.RepositoryIndex(service_pb2.RepositoryIndexRequest()),
            lambda: service.ModelMetadata(service_pb2.ModelMetadataRequest(name="iris")),
        ):
            assert status_of(call) == grpc.StatusCode.UNAUTHENTICATED
        assert service.ModelInfer(iris_request(), metadata=[("authorization", "Bearer sesame")]).outputs
        with triton_grpc.InferenceServerClient(server.grpc_target) as client:  # probes stay open, as over HTTP
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
            assert client.get_model_repository_index(headers={"authorization": "Bearer sesame"}).models
        assert "sesame" not in server.log()
    finally:
        server.stop()


def test_auth_health_closes_the_probes_and_health_too(ops_venv: Venv, tmp_path: Path) -> None:
    server = Server.start(ops_venv, tmp_path / "server.log", "--auth-health", STEVEDORE_API_KEYS="sesame")
    try:
        server.wait_for("/readyz", status=401)  # listening; the models are loaded before either port listens
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
        everything = health_pb2.HealthCheckRequest(service="")
        deadline = time.monotonic() + 60
        while True:  # until gRPC listens too
            try:
                health.Check(everything, metadata=[("authorization", "Bearer sesame")], timeout=5)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
        assert status_of(lambda: health.Check(everything)) == grpc.StatusCode.UNAUTHENTICATED
        assert status_of(lambda: next(health.Watch(everything))) == grpc.StatusCode.UNAUTHENTICATED
        live = service_pb2.ServerLiveRequest()
        assert status_of(lambda: stub(server).ServerLive(live)) == grpc.StatusCode.UNAUTHENTICATED
        key = [("authorization", "Bearer sesame")]
        assert health.Check(everything, metadata=key).status == health_pb2.HealthCheckResponse.SERVING
        assert next(health.Watch(everything, metadata=key)).status == health_pb2.HealthCheckResponse.SERVING
        assert stub(server).ServerLive(live, metadata=key).live
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_grpc_port_in_use_stops_the_start_with_a_clear_error(ops_venv: Venv, tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        server = Server.start(ops_venv, tmp_path / "server.log", "--grpc-port", port, "--workers", workers)
        try:
            code = server.process.wait(timeout=60)
        finally:
            server.stop()
    assert code != 0
    assert f"gRPC cannot listen on 127.0.0.1:{port}" in server.log() and "Traceback" not in server.log()


def test_grpc_port_0_turns_grpc_off(ops_venv: Venv, tmp_path: Path) -> None:
    server = start(ops_venv, tmp_path, "--grpc-port", "0")
    try:
        assert "gRPC" not in server.log()
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    finally:
        server.stop()


# -- batching, workers, shutdown ----------------------------------------------------------------------------


def test_grpc_requests_join_adaptive_batches(ops_venv: Venv, tmp_path: Path) -> None:
    server = start(ops_venv, tmp_path, config="[models.sleeper]\nmax_batch_size = 8\nmax_batch_time = 0.05\n")
    try:
        service = stub(server)
        calls = [service.ModelInfer.future(sleeper_request(0.1)) for _ in range(12)]
        assert all(call.result().model_name == "sleeper" for call in calls)
        metrics = httpx.get(server.url + "/metrics").text
        batches = re.search(r'stevedore_batch_size_count\{model="sleeper",version="1"\} (\S+)', metrics)
        assert batches and float(batches.group(1)) < 12, metrics  # some calls shared a model call
    finally:
        server.stop()


def test_workers_share_the_grpc_port(ops_venv: Venv, tmp_path: Path) -> None:
    server = start(ops_venv, tmp_path, "--workers", "2")
    try:
        prefixes: Counter[str] = Counter()
        deadline = time.monotonic() + 90  # /readyz answered from one worker; the other may still be starting
        while len(prefixes) < 2 and time.monotonic() < deadline:
            # Each channel its own connection, which the kernel gives to either worker's listener.
            with grpc.insecure_channel(server.grpc_target) as channel:
                service = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                response, call = service.ModelInfer.with_call(iris_request())
                assert response.outputs[0].name == "output-0"
                prefixes[dict(call.trailing_metadata())["x-request-id"][:12]] += 1  # a process's id prefix
        assert len(prefixes) == 2, prefixes
        assert server.stop() == 0
    finally:
        server.stop()


def test_sigterm_under_grpc_load_loses_nothing(ops_venv: Venv, tmp_path: Path) -> None:
    """Health turns NOT_SERVING first and the server serves on for the shutdown delay: clients that leave when
    told (as a load balancer does) see only answers. A call in flight finishes. A client that keeps sending to
    the end sees answers, then UNAVAILABLE; a call that reaches the stopping server before it was handed to the
    service is CANCELLED by gRPC's core (never started: the log shows every call started answered)."""
    # A shutdown delay as deployments set it (seconds, not one): on two loaded cores this test's own client
    # threads may take a while to see the status change, and the polite clients must have left before it ends.
    server = start(ops_venv, tmp_path, "--shutdown-delay", "3")
    polite: Counter[str] = Counter()
    stubborn: Counter[str] = Counter()
    lock = threading.Lock()
    not_serving = threading.Event()
    stop = threading.Event()

    def loop(outcomes: Counter[str], leave: threading.Event) -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            service = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not leave.is_set():
                try:
                    service.ModelInfer(iris_request(), timeout=30)
                    outcome = "OK"
                except grpc.RpcError as error:
                    outcome = error.code().name
                with lock:
                    outcomes[outcome] += 1

    watching = threading.Event()
    watched: list[object] = []  # what the Watch stream gave: its statuses, or the error that ended it

    def watch() -> None:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
        try:
            for answer in health.Watch(health_pb2.HealthCheckRequest(service="")):
                watched.append(answer.status)
                watching.set()  # the stream is open: the first answer came
                if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    not_serving.set()
                    return
        except grpc.RpcError as error:
            watched.append(error)

    # Daemon threads, and stopped in any case: clients left calling a server that is gone would spin, and keep
    # the test run from exiting, if an assertion below fails.
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clients = [threading.Thread(target=loop, args=(polite, not_serving), daemon=True) for _ in range(6)]
    clients += [threading.Thread(target=loop, args=(stubborn, stop), daemon=True) for _ in range(2)]
    slow = stub(server).ModelInfer.future(sleeper_request(2.5), timeout=30)
    for thread in clients:
        thread.start()
    try:
        wait_until(lambda: polite["OK"] > 0 and stubborn["OK"] > 0, "every kind of client to have its first answer")
        assert watching.wait(30), "the health Watch stream did not open"
        server.process.send_signal(15)
        assert not_serving.wait(30), f"not NOT_SERVING: {watched}; the server's log ends:\n{server.log()[-6000:]}"
        assert slow.result().model_name == "sleeper"  # in flight across the whole drain
        code = server.process.wait(timeout=60)
    finally:
        not_serving.set()
        stop.set()
        for thread in [*clients, watcher]:
            thread.join(timeout=60)
        server.stop()
    assert code == 0
    assert polite["OK"] > 0 and set(polite) == {"OK"}, polite
    assert stubborn["OK"] > 0 and set(stubborn) <= {"OK", "UNAVAILABLE", "CANCELLED"}, stubborn
    started = re.findall(r'"GRPC /inference\.GRPCInferenceService/ModelInfer" (\d+) ', server.log())
    assert set(started) == {"0"} and len(started) == polite["OK"] + stubborn["OK"] + 1
