"""The servers compared: how each is started, where it answers, and in which format."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grpc_client import METHOD, GrpcPayload
from .payloads import Payload, RowsPayload, V1Payload, V2BinaryPayload, V2JsonPayload
from .settings import BENCH_DIR

SERVERS_DIR = BENCH_DIR / "servers"


@dataclass(frozen=True)
class Launch:
    """What one start of a server is given."""

    venv: Path
    ports: list[int]
    model: Path  # the exported joblib model
    work: Path  # a new, empty directory for this start
    batching_config: Path | None = None  # the settings file that turns our adaptive batching on
    tools: Path | None = None  # the tools environment, where a target's companion runs

    @property
    def tools_python(self) -> str:
        if self.tools is None:
            raise OSError("the tools environment is not installed")
        return str(self.tools / "bin" / "python")

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def grpc_port(self) -> int:
        """Every target that serves gRPC listens for it on its second port."""
        return self.ports[1]


def no_environment(launch: Launch) -> dict[str, str]:
    return {}


def nothing_to_prepare(launch: Launch) -> None:
    return None


def nothing_left(launch: Launch) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    #: Name of its virtual environment (see venvs.ENVIRONMENTS); the ours-* targets share one (ours-ray has its own).
    venv: str
    #: A GrpcPayload for the gRPC targets: loaded with h2load and checked by a gRPC client, on ports[1].
    payload: Payload | GrpcPayload
    #: The HTTP route, or the gRPC method of a gRPC target.
    predict_path: str
    #: Always over HTTP: every server here answers its readiness there.
    ready_path: str
    argv: Callable[[Launch], list[str]]
    #: Loopback ports it listens on (HTTP first, then gRPC where it serves it).
    ports: int = 1
    environment: Callable[[Launch], dict[str, str]] = field(default=no_environment)
    prepare: Callable[[Launch], None] = field(default=nothing_to_prepare)
    #: Has adaptive batching of its own, started with the settings file for the batching scenario.
    batching: bool = False
    #: The model whose statistics (Triton's extension, ``GET /v2/models/NAME/stats``) are read around each load:
    #: ours with one server process (with several, two reads may reach two processes), None for the others.
    stats_model: str | None = None
    #: A process started (in the tools environment) before the target and stopped after it: the OTLP receiver.
    companion: Callable[[Launch], list[str]] | None = None
    #: What the target left behind once stopped (spans received, payload log lines), recorded per start.
    leftovers: Callable[[Launch], dict[str, Any]] = field(default=nothing_left)

    @property
    def grpc(self) -> bool:
        return isinstance(self.payload, GrpcPayload)


STEVEDORE_ROUTE = "/models/iris/predict"
V2_ROUTE = "/v2/models/iris/infer"


# -- floor --------------------------------------------------------------------


def floor_argv(launch: Launch) -> list[str]:
    return [
        str(launch.venv / "bin" / "uvicorn"), "floor_app:create_app", "--factory", "--app-dir", str(SERVERS_DIR),
        "--host", "127.0.0.1", "--port", str(launch.port), "--workers", "1", "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def floor_environment(launch: Launch) -> dict[str, str]:
    return {"FLOOR_MODEL": str(launch.model)}


# -- MLServer -------------------------------------------------------------------


def mlserver_argv(launch: Launch) -> list[str]:
    return [str(launch.venv / "bin" / "mlserver"), "start", str(launch.work)]


def mlserver_prepare(launch: Launch) -> None:
    """MLServer's defaults, except where it listens: HTTP, gRPC and metrics on 127.0.0.1 and free ports."""
    http_port, grpc_port, metrics_port = launch.ports
    server = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    model = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(launch.model), "version": "1"},
    }
    (launch.work / "settings.json").write_text(json.dumps(server, indent=2))
    (launch.work / "model-settings.json").write_text(json.dumps(model, indent=2))


# -- KServe ---------------------------------------------------------------------


def kserve_argv(launch: Launch) -> list[str]:
    return [
        str(launch.venv / "bin" / "python"), str(SERVERS_DIR / "kserve_iris.py"), "--model_name", "iris",
        "--model_path", str(launch.model), "--http_port", str(launch.ports[0]), "--grpc_port", str(launch.ports[1]),
    ]  # fmt: skip


# -- ours -------------------------------------------------------------------------


def ours_argv(workers: int, *options: str) -> Callable[[Launch], list[str]]:
    """gRPC is on by default (port 8081): every start gets a free port for it, whether it is loaded or not."""

    def argv(launch: Launch) -> list[str]:
        command = [str(launch.venv / "bin" / "stevedore-server"), "run", "--host", "127.0.0.1"]
        command += ["--port", str(launch.port), "--grpc-port", str(launch.grpc_port), "--workers", str(workers)]
        command += list(options)
        if launch.batching_config is not None:
            command += ["--config", str(launch.batching_config)]
        return command

    return argv


def ours(
    name: str, summary: str, payload: Payload | GrpcPayload, predict_path: str, workers: int = 1, *options: str
) -> Target:
    return Target(
        name, summary, "ours", payload, predict_path, "/readyz", ours_argv(workers, *options), ports=2,
        batching=True, stats_model="iris" if workers == 1 else None,
    )  # fmt: skip


def in_processes(name: str, processes: int) -> Callable[[Launch], None]:
    """Write the settings file that runs model ``name`` in ``processes`` worker processes."""

    def prepare(launch: Launch) -> None:
        (launch.work / "processes.toml").write_text(f"[models.{name}]\nprocesses = {processes}\n")

    return prepare


def ours_processes(name: str, summary: str, model: str, processes: int) -> Target:
    """Ours with ``model`` in worker processes (batching off: it runs the batching scenario as it is)."""

    def argv(launch: Launch) -> list[str]:
        return [*ours_argv(1)(launch), "--config", str(launch.work / "processes.toml")]

    return Target(
        name, summary, "ours", RowsPayload(), f"/models/{model}/predict", "/readyz", argv, ports=2,
        prepare=in_processes(model, processes), stats_model=model,
    )  # fmt: skip


# -- ours, a model file with no code (issue 25) ------------------------------------------

#: The plugins of the ``ours`` environment that declare models (``iris`` among them): off where the model file is
#: served, whose name ``iris`` would clash with the example plugin's (a duplicate name is a startup error).
PLUGIN_DISTRIBUTIONS = "stevedore-sklearn-logreg,stevedore-bench-iris-gil"


def model_file_argv(source: Callable[[Launch], list[str]]) -> Callable[[Launch], list[str]]:
    """Ours with the plugins' models off, serving what ``source`` names through the scikit-learn runtime.

    ``--allow-pickle``: the exported model is a joblib file, which the runtime refuses unless trusted.
    """

    def argv(launch: Launch) -> list[str]:
        options = ["--disable-plugins", PLUGIN_DISTRIBUTIONS, "--allow-pickle", *source(launch)]
        return [*ours_argv(1)(launch), *options]

    return argv


def joblib_model(launch: Launch) -> list[str]:
    """The exported model, the very file MLServer, KServe and the floor serve, as model ``iris``."""
    return ["--model", f"iris={launch.model}"]


def mlserver_folder(launch: Launch) -> list[str]:
    """The folder ``mlserver_prepare`` writes for MLServer, unchanged: its ``settings.json`` is read for what maps
    (here nothing: its addresses are MLServer's, ours come from the flags, the same ports)."""
    return ["--mlserver", str(launch.work)]


def ours_model_file(name: str, summary: str, payload: Payload, predict_path: str) -> Target:
    """Ours serving the exported joblib file with ``--model``: against the hand-written plugin of the same model."""
    return Target(
        name, summary, "ours", payload, predict_path, "/readyz", model_file_argv(joblib_model), ports=2,
        batching=True, stats_model="iris",
    )  # fmt: skip


# -- ours, observed (issue 27) ----------------------------------------------------------

#: The environment of the same build without the ``otel`` extra (no OpenTelemetry SDK): ``ours-no-otel``.
NO_OTEL_VENV = "ours-no-otel"
#: The third port of ``ours-tracing``: its OTLP receiver's (servers/otlp_sink.py).
OTLP_PORT_INDEX = 2
PAYLOAD_LOG_FILE = "payload-log.jsonl"
SPAN_COUNTS_FILE = "otlp-received.json"


def otlp_sink_argv(launch: Launch) -> list[str]:
    """The OTLP receiver, in the tools environment, on the target's third port; it counts what it gets."""
    port = str(launch.ports[OTLP_PORT_INDEX])
    sink = str(SERVERS_DIR / "otlp_sink.py")
    return [launch.tools_python, sink, "--port", port, "--counts", str(launch.work / SPAN_COUNTS_FILE)]


def tracing_environment(launch: Launch) -> dict[str, str]:
    """Every span sampled, exported over OTLP gRPC to the receiver: the standard variables, nothing of ours."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{launch.ports[OTLP_PORT_INDEX]}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "stevedore-bench",
    }


def spans_received(launch: Launch) -> dict[str, Any]:
    """What the receiver wrote when it stopped: ``exports`` and ``spans``."""
    counts = launch.work / SPAN_COUNTS_FILE
    return dict(json.loads(counts.read_text())) if counts.exists() else {"spans": None}


def payload_log_argv(launch: Launch) -> list[str]:
    """JSON lines into the start's work directory (in the run's directory): the file sink."""
    return [*ours_argv(1)(launch), "--payload-log", f"file:{launch.work / PAYLOAD_LOG_FILE}"]


def payload_lines(launch: Launch) -> dict[str, Any]:
    """The payload log's lines and bytes once the server has stopped (its queue drained at shutdown)."""
    log = launch.work / PAYLOAD_LOG_FILE
    if not log.exists():
        return {"payload_lines": None}
    with log.open("rb") as lines:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))
    return {"payload_lines": count, "payload_mib": round(log.stat().st_size / 2**20, 1)}


def ours_observed(
    name: str, summary: str, argv: Callable[[Launch], list[str]], venv: str = "ours", **options: Any
) -> Target:
    """Ours on the stevedore route, one process, as ``ours-stevedore`` but for what ``options`` change."""
    defaults: dict[str, Any] = {"ports": 2, "batching": True, "stats_model": "iris"}
    return Target(name, summary, venv, RowsPayload(), STEVEDORE_ROUTE, "/readyz", argv, **(defaults | options))


# -- ours, routing between versions (issue 29) ---------------------------------------

TRAFFIC_ROUTE = "/models/iris-live/predict"


def ours_traffic(name: str, summary: str, shadow: str) -> Target:
    """Ours called through ``[traffic.iris-live]``, whose one variant is iris (and whose shadow ``shadow`` names):
    the answers are iris's. iris-proba, the shadow, runs in a worker process of its own, as a shadow should (its
    compute off the live model's interpreter), with or without the shadow. Batching off: its scenario's settings
    file would replace this one."""

    def prepare(launch: Launch) -> None:
        table = '[traffic.iris-live]\nsplit = [{ model = "iris", weight = 1 }]\n' + shadow
        (launch.work / "traffic.toml").write_text(table + "\n[models.iris-proba]\nprocesses = 1\n")

    def argv(launch: Launch) -> list[str]:
        return [*ours_argv(1)(launch), "--config", str(launch.work / "traffic.toml")]

    return Target(
        name, summary, "ours", RowsPayload(), TRAFFIC_ROUTE, "/readyz", argv, ports=2, prepare=prepare,
        stats_model="iris",
    )  # fmt: skip


# -- Ray Serve --------------------------------------------------------------------

#: CPUs of the single-node Ray cluster each Ray target starts (servers/ray_head.py): the machine's two cores.
RAY_CPUS = 2
#: The HTTP port of Serve's proxy, then those Ray would otherwise take fixed (GCS, client server, dashboard
#: agent, metrics, runtime-env agent).
RAY_PORTS = 6
#: Ours on Ray as the baseline is deployed: the one model (the plugin's other, iris-proba, would be a deployment
#: and a replica process of its own), one replica of it, one CPU reserved for it.
OURS_RAY_SETTINGS = """\
load_models = ["iris"]

[models.iris]
replicas = 1
ray_actor_options = {num_cpus = 1}
"""


#: What our model's deployment takes at once, its runtime's capacity (1 running, 64 waiting): for ray-fastapi-65.
OURS_MODEL_QUEUE = ("--model-max-ongoing-requests", "65")
#: Serve's throughput-optimized mode (Ray 2.56 on): user code on the replica's own event loop, gRPC between the
#: proxy and the replicas, request logs buffered, the heap frozen after startup. Read by every Ray process at
#: import: the cluster's head gets it from the target's environment (``ray_head.py`` passes it on).
THROUGHPUT_OPTIMIZED = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def throughput_optimized(launch: Launch) -> dict[str, str]:
    return dict(THROUGHPUT_OPTIMIZED)


def on_ray(deploy: Callable[[Launch], list[str]]) -> Callable[[Launch], list[str]]:
    """A local Ray cluster started in the target's process group, then ``deploy`` run on it."""

    def argv(launch: Launch) -> list[str]:
        ports = ",".join(str(port) for port in launch.ports[1:])
        return [
            str(launch.venv / "bin" / "python"), str(SERVERS_DIR / "ray_head.py"), "--ports", ports,
            "--num-cpus", str(RAY_CPUS), "--work", str(launch.work), "--", *deploy(launch),
        ]  # fmt: skip

    return argv


def ours_ray_deploy(launch: Launch) -> list[str]:
    return [
        str(launch.venv / "bin" / "stevedore-server"), "ray", "--host", "127.0.0.1", "--port", str(launch.port),
        "--config", str(launch.work / "stevedore-ray.toml"), "--grpc-port", "0",  # the baseline serves no gRPC
    ]  # fmt: skip


def ours_ray_prepare(launch: Launch) -> None:
    (launch.work / "stevedore-ray.toml").write_text(OURS_RAY_SETTINGS)


def ray_fastapi_deploy(*options: str) -> Callable[[Launch], list[str]]:
    def deploy(launch: Launch) -> list[str]:
        return [
            str(launch.venv / "bin" / "python"), str(SERVERS_DIR / "ray_fastapi.py"), "--model", str(launch.model),
            "--host", "127.0.0.1", "--port", str(launch.port), *options,
        ]  # fmt: skip

    return deploy


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "floor", "bare Starlette + uvicorn (uvloop, httptools, no access log): json, predict, json",
            "floor", RowsPayload(), "/predict", "/ready", floor_argv, environment=floor_environment,
        ),
        Target(
            "mlserver", "MLServer + mlserver-sklearn, its defaults; V2 JSON, FP32",
            "mlserver", V2JsonPayload("FP32"), V2_ROUTE, "/v2/models/iris/ready", mlserver_argv, ports=3,
            prepare=mlserver_prepare,
        ),
        Target(
            "kserve", "KServe ModelServer + a small kserve.Model, its defaults; V1",
            "kserve", V1Payload(), "/v1/models/iris:predict", "/v2/models/iris/ready", kserve_argv, ports=2,
        ),
        Target(
            "kserve-v2", "the same KServe server; V2 JSON, FP32",
            "kserve", V2JsonPayload("FP32"), V2_ROUTE, "/v2/models/iris/ready", kserve_argv, ports=2,
        ),
        Target(
            "mlserver-grpc", "the same MLServer, its gRPC port; ModelInfer, FP32 in raw_input_contents",
            "mlserver", GrpcPayload("FP32", "raw"), METHOD, "/v2/models/iris/ready", mlserver_argv, ports=3,
            prepare=mlserver_prepare,
        ),
        Target(
            "kserve-grpc", "the same KServe server, its gRPC port; ModelInfer, FP32 in raw_input_contents",
            "kserve", GrpcPayload("FP32", "raw"), METHOD, "/v2/models/iris/ready", kserve_argv, ports=2,
        ),
        ours("ours-stevedore", "stevedore-server, stevedore route", RowsPayload(), STEVEDORE_ROUTE),
        ours("ours-v2", "stevedore-server, V2 JSON, FP64", V2JsonPayload("FP64"), V2_ROUTE),
        ours("ours-v2-binary", "stevedore-server, V2 binary tensors in and out, FP64", V2BinaryPayload(), V2_ROUTE),
        ours(
            "ours-grpc", "stevedore-server, its gRPC port; ModelInfer, FP64 in raw_input_contents",
            GrpcPayload("FP64", "raw"), METHOD,
        ),
        ours("ours-workers2", "stevedore-server --workers 2, stevedore route", RowsPayload(), STEVEDORE_ROUTE, 2),
        ours(
            "ours-grpc-workers2", "stevedore-server --workers 2, its gRPC port; ModelInfer, FP64 in raw_input_contents",
            GrpcPayload("FP64", "raw"), METHOD, 2,
        ),
        ours(
            "ours-threads", "stevedore-server --inline-budget 0 (every call on the model's thread), stevedore route",
            RowsPayload(), STEVEDORE_ROUTE, 1, "--inline-budget", "0",
        ),
        ours_model_file(
            "ours-runtime", "stevedore-server --model iris=model.joblib (the scikit-learn runtime), stevedore route",
            RowsPayload(), STEVEDORE_ROUTE,
        ),
        ours_model_file(
            "ours-runtime-v2", "stevedore-server --model iris=model.joblib, V2 JSON, FP64",
            V2JsonPayload("FP64"), V2_ROUTE,
        ),
        Target(
            "ours-mlserver", "stevedore-server --mlserver DIR, the mlserver target's folder as it is; V2 JSON, FP32",
            "ours", V2JsonPayload("FP32"), V2_ROUTE, "/readyz", model_file_argv(mlserver_folder), ports=3,
            prepare=mlserver_prepare, stats_model="iris",
        ),
        ours_observed(
            "ours-no-otel", "stevedore-server as ours-stevedore, installed without the otel extra (no OpenTelemetry "
            "SDK)", ours_argv(1), venv=NO_OTEL_VENV,
        ),
        ours_observed(
            "ours-tracing", "stevedore-server --tracing, every span sampled (always_on), OTLP gRPC to a receiver "
            "that discards (servers/otlp_sink.py)", ours_argv(1, "--tracing"), ports=3,
            environment=tracing_environment, companion=otlp_sink_argv, leftovers=spans_received,
        ),
        ours_observed(
            "ours-payload-log", "stevedore-server --payload-log file:PATH (JSON lines into the run's directory)",
            payload_log_argv, leftovers=payload_lines,
        ),
        ours_traffic("ours-traffic", "stevedore-server, iris called through a traffic name (one variant)", ""),
        ours_traffic(
            "ours-shadow", "stevedore-server, iris through a traffic name whose shadow is iris-proba (a copy of "
            "each request, compared off the request path)", 'shadow = "iris-proba"\n',
        ),
        ours_traffic(
            "ours-shadow-tenth", "ours-shadow copying a tenth of the requests (shadow_share = 0.1)",
            'shadow = "iris-proba"\nshadow_share = 0.1\n',
        ),
        ours_processes(
            "ours-processes", "stevedore-server, iris in 1 worker process ([models.iris] processes = 1)", "iris", 1
        ),
        Target(
            "ours-gil-threads", "stevedore-server, iris-gil (5 ms of pure Python a call) on 2 threads",
            "ours", RowsPayload(), "/models/iris-gil/predict", "/readyz", ours_argv(1, "--max-concurrency", "2"),
            ports=2, stats_model="iris-gil",
        ),
        ours_processes(
            "ours-gil-processes2", "stevedore-server, iris-gil in 2 worker processes ([models.iris-gil] processes = 2)",
            "iris-gil", 2,
        ),
        Target(
            "ours-ray", "stevedore-server ray on a local Ray cluster: proxy, ingress replica, model replica",
            "ours-ray", RowsPayload(), STEVEDORE_ROUTE, "/readyz", on_ray(ours_ray_deploy), ports=RAY_PORTS,
            prepare=ours_ray_prepare,
        ),
        Target(
            "ray-fastapi", "Ray Serve by hand: FastAPI ingress, DeploymentHandle to a model deployment",
            "ray", RowsPayload(), "/predict", "/ready", on_ray(ray_fastapi_deploy()), ports=RAY_PORTS,
        ),
        Target(
            "ray-fastapi-65", "the same, its model deployment taking 65 requests at once (as ours's) instead of 5",
            "ray", RowsPayload(), "/predict", "/ready", on_ray(ray_fastapi_deploy(*OURS_MODEL_QUEUE)), ports=RAY_PORTS,
        ),
        Target(
            "ours-ray-fast", "ours-ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1", "ours-ray", RowsPayload(),
            STEVEDORE_ROUTE, "/readyz", on_ray(ours_ray_deploy), ports=RAY_PORTS, prepare=ours_ray_prepare,
            environment=throughput_optimized,
        ),
        Target(
            "ray-fastapi-fast", "ray-fastapi-65 with RAY_SERVE_THROUGHPUT_OPTIMIZED=1: the baseline's best options",
            "ray", RowsPayload(), "/predict", "/ready", on_ray(ray_fastapi_deploy(*OURS_MODEL_QUEUE)), ports=RAY_PORTS,
            environment=throughput_optimized,
        ),
    )
}  # fmt: skip
