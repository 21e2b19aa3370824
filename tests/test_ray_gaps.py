"""``stevedore-server ray`` without the gaps of its first version, on a real Ray cluster (one head node on this
machine, kept light): the Open Inference Protocol over gRPC through Ray Serve's gRPC proxy (``tritonclient.grpc``),
the repository's load and unload deploying and removing a model's deployment live, and the replicas' inference
metrics on the node's metrics export port (Ray's Prometheus endpoint)."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from stevedore_server.base.settings import Settings
from stevedore_server.frontends.v2.grpc_service import InferenceService
from stevedore_server.rayserve.config import serve_config
from stevedore_server.rayserve.grpc_proxy import RPCS, SERVICE

from .documentation import block, page
from .headstart import HeadStart
from .helpers import wait_until
from .raycluster import RAY_VENV, RayCluster
from .venvs import Venv, free_port

pytestmark = pytest.mark.ray

#: The settings' ``max_body_size``: a gRPC message over it is refused.
MAX_BODY_SIZE = 1024 * 1024
#: iris is deployed with the application; iris-proba is not (``load_models``), until a load deploys it.
SETTINGS = f"""
plugins = ["stevedore-sklearn-logreg"]
load_models = ["iris"]
max_body_size = {MAX_BODY_SIZE}

[models.iris]
ray_actor_options = {{num_cpus = 0.25}}

[models.iris-proba]
ray_actor_options = {{num_cpus = 0.25}}

[pipelines.proba-then-iris]             # failed until a load deploys iris-proba
type = "sequence"
steps = [{{ model = "iris-proba" }}, {{ model = "iris", data = "$request" }}]
"""
#: The Ray page's command with a gRPC port (``test_docs_examples.RUN``).
GRPC_COMMAND = "--grpc-port 8081"
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
#: Seconds for the application to deploy; for a replica's samples to reach Ray's Prometheus endpoint (the
#: replica copies them every 5 s, Ray exports every 10 s).
DEPLOY_TIMEOUT = 300
METRICS_TIMEOUT = 90


@pytest.fixture(scope="module")
def cluster(head_start: HeadStart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    environment: Venv = head_start.result(RAY_VENV)
    running = RayCluster(environment, Path(tmp_path_factory.mktemp("gaps-cluster")))
    try:
        running.start(workers=0)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gaps-settings") / "models.toml"
    path.write_text(SETTINGS)
    return path


@pytest.fixture(scope="module")
def ports(cluster: RayCluster, settings_file: Path) -> tuple[int, int]:
    """The Ray page's ``stevedore-server ray`` with a gRPC port, deployed: its HTTP and gRPC ports."""
    http_port, grpc_port = free_port(), free_port()
    deploy(cluster, settings_file, http_port, grpc_port)
    return http_port, grpc_port


def deploy(cluster: RayCluster, settings: Path, http_port: int, grpc_port: int, **variables: str) -> None:
    """The Ray page's command with a gRPC port, for this cluster on loopback at these ports."""
    words = shlex.split(block("sh", GRPC_COMMAND, page("deployment/ray.md")))
    replacements = {"HEAD:6379": cluster.address, "8000": str(http_port), "8081": str(grpc_port),
                    "models.toml": str(settings)}  # fmt: skip
    command = [str(cluster.environment.bin / words[0]), *(replacements.get(word, word) for word in words[1:])]
    command += ["--host", "127.0.0.1"]
    result = subprocess.run(
        command, env=cluster.env(**variables), capture_output=True, text=True, timeout=DEPLOY_TIMEOUT
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def ray_url(ports: tuple[int, int]) -> str:
    return f"http://127.0.0.1:{ports[0]}"


@pytest.fixture
def grpc_client(ports: tuple[int, int]) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"127.0.0.1:{ports[1]}")
    try:
        yield client
    finally:
        client.close()


def applications(cluster: RayCluster) -> set[str]:
    """The Serve applications running on the cluster."""
    code = "from ray import serve\nprint(' '.join(serve.status().applications))"
    return set(cluster.python(code).split())


def states(ray_url: str) -> dict[str, str]:
    response = httpx.post(f"{ray_url}/v2/repository/index", timeout=30)
    assert response.status_code == 200, response.text
    return {entry["name"]: entry["state"] for entry in response.json()}


def test_the_proxy_s_service_has_every_rpc_of_ours() -> None:
    service = InferenceService(None, None, None, None)  # type: ignore[arg-type]  # only its methods' names
    assert RPCS == tuple(service.methods())
    assert SERVICE == "inference.GRPCInferenceService"


def test_the_serve_config_starts_the_grpc_proxy_with_the_service_unless_the_port_is_0() -> None:
    config = serve_config(Settings(grpc_port=9001), [], "127.0.0.1", 8000)
    servicer = "stevedore_server.rayserve.grpc_proxy:add_inference_service"
    assert config["grpc_options"] == {"port": 9001, "grpc_servicer_functions": [servicer]}
    assert "grpc_options" not in serve_config(Settings(grpc_port=0), [], "127.0.0.1", 8000)


def test_triton_s_grpc_client_through_ray_serve_s_grpc_proxy(
    grpc_client: triton.InferenceServerClient, ray_url: str
) -> None:
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("iris") and not grpc_client.is_model_ready("iris-proba")
    metadata = grpc_client.get_model_metadata("iris")
    assert metadata.name == "iris" and list(metadata.versions) == ["1"] and metadata.platform == "stevedore"
    assert [(tensor.datatype, list(tensor.shape)) for tensor in metadata.inputs] == [("FP64", [-1, 4])]
    rows = np.array([SETOSA, VIRGINICA])
    tensor = triton.InferInput(metadata.inputs[0].name, list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = grpc_client.infer("iris", [tensor])
    answer = result.as_numpy(metadata.outputs[0].name)
    assert answer is not None
    over_http = httpx.post(f"{ray_url}/models/iris/predict", json=rows.tolist(), timeout=30).json()
    assert answer.tolist() == over_http["predictions"] == [0, 2]


def test_the_standard_health_check_through_the_proxy(ports: tuple[int, int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest(), timeout=30).status == health_pb2.HealthCheckResponse.SERVING
        model = check(health_pb2.HealthCheckRequest(service="iris"), timeout=30)
        assert model.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check(health_pb2.HealthCheckRequest(service="irs"), timeout=30)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_grpc_errors_through_the_proxy_are_the_status_codes_of_run(
    grpc_client: triton.InferenceServerClient, ports: tuple[int, int]
) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.get_model_metadata("irs")
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "did you mean 'iris'" in unknown.value.message()
    tensor = triton.InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]]))
    with pytest.raises(InferenceServerException) as wrong_shape:
        grpc_client.infer("iris", [tensor])
    assert wrong_shape.value.status() == "StatusCode.INVALID_ARGUMENT"
    with grpc.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:  # bytes that are no request message
        infer = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        with pytest.raises(grpc.RpcError) as garbage:
            infer(b"\xff\xff\xff", timeout=30)
    assert garbage.value.code() is grpc.StatusCode.INVALID_ARGUMENT, garbage.value.details()


def test_a_message_over_max_body_size_is_refused_through_the_proxy_as_by_run(ports: tuple[int, int]) -> None:
    """Serve's proxy takes messages up to 2 GiB; the ingress refuses one over ``max_body_size`` (1 MiB here)."""
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    request.raw_input_contents.append(bytes(MAX_BODY_SIZE))
    with grpc.insecure_channel(f"127.0.0.1:{ports[1]}") as channel:
        infer = channel.unary_unary(f"/{SERVICE}/ModelInfer")
        with pytest.raises(grpc.RpcError) as refused:
            infer(request.SerializeToString(), timeout=60)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    assert f"exceeds the limit of {MAX_BODY_SIZE} bytes" in str(refused.value.details())


def test_load_deploys_a_model_s_deployment_and_unload_removes_it(cluster: RayCluster, ray_url: str) -> None:
    assert states(ray_url) == {"iris": "READY", "iris-proba": "UNAVAILABLE"}
    assert "stevedore.iris-proba:1" not in applications(cluster)
    loaded = httpx.post(f"{ray_url}/v2/repository/models/iris-proba/load", timeout=DEPLOY_TIMEOUT)
    assert loaded.status_code == 200, loaded.text
    assert states(ray_url) == {"iris": "READY", "iris-proba": "READY"}
    assert "stevedore.iris-proba:1" in applications(cluster)  # a deployment of its own, in its own application
    answer = httpx.post(f"{ray_url}/models/iris-proba/predict", json=[SETOSA], timeout=30)
    assert answer.status_code == 200, answer.text
    assert np.argmax(answer.json()["predictions"][0]) == 0
    catalogue = httpx.get(f"{ray_url}/models/iris-proba", timeout=30).json()
    assert catalogue["metadata"]["runs_in"] == {"kind": "ray", "deployment": "iris-proba:1"}

    unloaded = httpx.post(f"{ray_url}/v2/repository/models/iris-proba/unload", timeout=DEPLOY_TIMEOUT)
    assert unloaded.status_code == 200, unloaded.text
    assert states(ray_url) == {"iris": "READY", "iris-proba": "UNAVAILABLE"}
    assert "stevedore.iris-proba:1" not in applications(cluster)
    gone = httpx.post(f"{ray_url}/models/iris-proba/predict", json=[SETOSA], timeout=30)
    assert gone.status_code == 503 and "not loaded" in gone.json()["error"]


def test_a_pipeline_failed_for_a_model_not_deployed_serves_once_a_load_deploys_it(
    ray_url: str, grpc_client: triton.InferenceServerClient
) -> None:
    """The ingress checked the pipeline at startup: failed, iris-proba having no deployment. Once the load has
    deployed it, the pipeline is checked again and answers, over HTTP and through Serve's gRPC proxy."""
    entry = httpx.get(f"{ray_url}/pipelines/proba-then-iris", timeout=30).json()
    assert entry["state"] == "failed" and "iris-proba" in entry["reason"], entry
    refused = httpx.post(f"{ray_url}/pipelines/proba-then-iris/predict", json=[SETOSA], timeout=30)
    assert refused.status_code == 503, refused.text
    assert httpx.get(f"{ray_url}/models/iris", timeout=30).json()["ready"]  # the models keep serving
    loaded = httpx.post(f"{ray_url}/v2/repository/models/iris-proba/load", timeout=DEPLOY_TIMEOUT)
    assert loaded.status_code == 200, loaded.text
    try:
        answer = httpx.post(f"{ray_url}/pipelines/proba-then-iris/predict", json=[SETOSA, VIRGINICA], timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [0, 2]
        rows = np.array([SETOSA, VIRGINICA])
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        result = grpc_client.infer("proba-then-iris", [tensor])
        assert result.get_response().model_name == "proba-then-iris"
        assert result.as_numpy("output-0").tolist() == [0, 2]
    finally:
        unloaded = httpx.post(f"{ray_url}/v2/repository/models/iris-proba/unload", timeout=DEPLOY_TIMEOUT)
        assert unloaded.status_code == 200, unloaded.text


def test_a_model_of_the_application_unloaded_and_loaded_again(
    ray_url: str, grpc_client: triton.InferenceServerClient
) -> None:
    grpc_client.unload_model("iris")  # the repository's RPCs through the proxy, too
    assert not grpc_client.is_model_ready("iris")
    refused = httpx.post(f"{ray_url}/models/iris/predict", json=[SETOSA], timeout=30)
    assert refused.status_code == 503
    grpc_client.load_model("iris")
    assert grpc_client.is_model_ready("iris")
    assert httpx.post(f"{ray_url}/models/iris/predict", json=[SETOSA], timeout=30).json()["predictions"] == [0]


def test_loading_or_unloading_an_unknown_model_names_the_models(ray_url: str) -> None:
    for action in ("load", "unload"):
        response = httpx.post(f"{ray_url}/v2/repository/models/irsi/{action}", timeout=30)
        assert response.status_code == 404 and "iris" in response.json()["error"], response.text


def metrics_port(cluster: RayCluster, node_id: str) -> int:
    code = f"print(next(n['MetricsExportPort'] for n in ray.nodes() if n['NodeID'] == {node_id!r}))"
    return int(cluster.python(code).strip())


def test_a_replica_s_inference_metrics_on_its_node_s_metrics_export_port(cluster: RayCluster, ray_url: str) -> None:
    answers = [httpx.post(f"{ray_url}/models/iris/predict", json=[SETOSA], timeout=30) for _ in range(5)]
    assert all(answer.status_code == 200 for answer in answers)
    node, replica = answers[-1].headers["x-served-by"].split("/")
    endpoint = f"http://127.0.0.1:{metrics_port(cluster, node)}/metrics"
    counted = re.compile(
        r'^ray_stevedore_inferences_total\{(?=[^}]*action="predict")(?=[^}]*model="iris")'
        rf'(?=[^}}]*node="{node}")(?=[^}}]*replica="{replica}")[^}}]*\}} (\S+)$',
        re.MULTILINE,
    )

    def counted_all() -> bool:
        found = counted.search(httpx.get(endpoint, timeout=30).text)
        return found is not None and float(found.group(1)) >= len(answers)

    wait_until(counted_all, f"the replica's {len(answers)} inferences on {endpoint}", deadline=METRICS_TIMEOUT)
    text = httpx.get(endpoint, timeout=30).text
    assert re.search(rf'^ray_stevedore_inference_duration_seconds_bucket\{{[^}}]*le="\+Inf"[^}}]*replica="{replica}"',
                     text, re.MULTILINE)  # fmt: skip
    where = httpx.get(f"{ray_url}/metrics", timeout=30).text  # the ingress's says where they are
    assert "# HELP stevedore_ray_replica_metrics" in where and "--metrics-export-port" in where


def test_api_keys_guard_the_rpcs_through_the_proxy_as_run_s(
    cluster: RayCluster, settings_file: Path, ports: tuple[int, int], tmp_path: Path
) -> None:
    """Last: the application deployed again, with an API key (its secrets file on the ingress's node)."""
    deploy(cluster, settings_file, *ports, STEVEDORE_API_KEYS="s3cret", STEVEDORE_STATE_DIR=str(tmp_path))
    client = triton.InferenceServerClient(f"127.0.0.1:{ports[1]}")
    try:
        tensor = triton.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([SETOSA]))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("iris", [tensor])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        answer = client.infer("iris", [tensor], headers={"authorization": "Bearer s3cret"})
        assert answer.as_numpy("output-0").tolist() == [0]
        assert client.is_server_ready()  # a probe needs no key
    finally:
        client.close()
