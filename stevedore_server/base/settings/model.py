"""Server settings: one object, read from CLI flags, ``STEVEDORE_*`` environment variables and a TOML file.

Precedence: a CLI flag beats its environment variable, which beats the file
(``--config`` / ``STEVEDORE_CONFIG``), which beats the default; a variable set
but empty counts as unset. Per-model
settings live in the file only, as ``[models.NAME]`` tables. ``stevedore-server
run`` hands the settings to its worker processes through the same environment
variables (and the file's path). Invalid settings stop startup with a message
naming the setting."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from stevedore_server.base.errors import SettingError, did_you_mean
from stevedore_server.base.sources import PluginSelection

from .pipelines import read_pipelines
from .traffic import read_traffic
from .values import parse, typed

ENV_PREFIX = "STEVEDORE_"
#: The variable container platforms set to the port a container must listen on.
PLATFORM_PORT = "PORT"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
#: What a payload log records of each inference: both bodies, or one of them.
PAYLOAD_LOG_MODES = ("all", "request", "response")
#: A payload log's sink: an HTTP(S) URL (CloudEvents), ``file:PATH`` (JSON lines) or ``-`` (standard output).
PAYLOAD_SINK = re.compile(r"\A(?:https?://\S+|file:.+|-)\Z")
MASK = "********"
#: When models load: all at startup, or each on its first request.
MODEL_LOADS = ("startup", "lazy")
#: What a ``processes = N`` model's call does when its client leaves or its deadline passes.
CANCEL_MODES = ("finish", "kill")
#: The units a byte size may be written in, by their factor.
BYTE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
              "TiB": 1024**4}  # fmt: skip
BYTE_SIZE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")
#: Seconds: a longer call on the event loop would delay every other request noticeably.
MAX_INLINE_BUDGET = 0.01


class DeclaresLimits(Protocol):
    """What a predictor declares of its own limits (``Predictor`` does): the defaults its model's table
    overrides."""

    name: str
    inline: bool
    max_batch_size: int
    max_batch_time: float


def setting(
    default: Any,
    help: str,
    secret: bool = False,
    file_only: bool = False,
    flag: bool | None = None,
    repeated: bool = False,
) -> Any:
    """A setting's field: ``secret`` ones are masked and never written out, and get no command-line flag (every
    user sees a command line) unless ``flag`` says so; a ``repeated`` list's flag is given once an item."""
    metadata = {
        "help": help,
        "secret": secret,
        "file_only": file_only,
        "flag": not secret if flag is None else flag,
        "repeated": repeated,
    }
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


#: Most worker processes of one model.
MAX_PROCESSES = 256
#: The per-model settings of Ray Serve's autoscaling: setting any turns it on.
AUTOSCALING_SETTINGS = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay", "downscale_delay")


@dataclass(frozen=True)
class ModelSettings:
    """Settings of one model, from its ``[models.NAME]`` table; unset ones fall back to the server's."""

    max_batch_size: int | None = setting(None, "Adaptive batching: most requests merged into one model call (1: off).")
    max_batch_time: float | None = setting(None, "Adaptive batching: seconds a batch waits for more requests.")
    timeout: float | None = setting(None, "Seconds an inference may take before the client gets 504.")
    max_concurrency: int | None = setting(None, "Inferences of this model running at once.")
    max_queue: int | None = setting(None, "Inferences of this model waiting; beyond it, 503 with Retry-After.")
    inline_budget: float | None = setting(
        None, "Seconds under which a predict call runs on the event loop (0: never; set: even without `inline`)."
    )
    processes: int | None = setting(
        None,
        "Worker processes running this model's inferences instead of threads (for CPU-bound models that hold "
        "the GIL); each loads the model.",
    )
    python: str | None = setting(
        None,
        "Interpreter (or virtual environment directory) of the model's worker processes, where its plugin and "
        "dependencies are installed: the model runs in its own environment.",
    )
    # On Ray Serve (`stevedore-server ray`), the model's deployment.
    replicas: int | None = setting(None, "Ray Serve: replicas of the model's deployment (without autoscaling).")
    min_replicas: int | None = setting(None, "Ray Serve autoscaling: fewest replicas (setting any of the three on).")
    max_replicas: int | None = setting(None, "Ray Serve autoscaling: most replicas.")
    target_ongoing_requests: float | None = setting(
        None, "Ray Serve autoscaling: requests in flight a replica should have; more adds replicas, fewer removes."
    )
    upscale_delay: float | None = setting(
        None, "Ray Serve autoscaling: seconds of high load before a replica is added."
    )
    downscale_delay: float | None = setting(
        None, "Ray Serve autoscaling: seconds of low load before a replica is removed."
    )
    max_replicas_per_node: int | None = setting(
        None, "Ray Serve: most replicas of the model on one node (1: every replica on a node of its own)."
    )
    ray_actor_options: dict[str, Any] | None = setting(  # noqa: RUF009  (a default of None)
        None, "Ray Serve: each replica's `ray_actor_options` (`num_cpus`, `num_gpus`, `memory` in bytes, ...)."
    )
    # A model file served with no code (`stevedore.runtimes`): these declare the model, which no plugin provides.
    uri: str | None = setting(
        None,
        "A model file or folder served with no code: a path (relative to the settings file), `file://`, "
        "`http(s)://`, `s3://` (`gs://`, `az://`, `hf://` with their extras).",
    )
    runtime: str | None = setting(
        None, "The runtime reading `uri` (`sklearn`, `xgboost`, `lightgbm`, `onnx`, `mlflow`, ...; default: guessed)."
    )
    version: str | None = setting(None, "The version of the model `uri` serves (default 1).")
    sha256: str | None = setting(
        None, "The SHA-256 (hex) `uri`'s file must have; another content fails the model. Pins a pickle as trusted."
    )
    trust: bool | None = setting(None, "Read `uri` even in a format that runs code when loaded (pickle, joblib).")
    output: str | None = setting(
        None, "The output a request gets where it names none (scikit-learn: predict, predict_proba, transform, ...)."
    )
    content_type: str | None = setting(
        None, "What V2 inputs become where a request names no content type (np, pd, str, base64, datetime)."
    )
    predict_schema: str | None = setting(
        None, "JSON Schema file of the predict payload, where the model file says too little (relative: as `uri`)."
    )
    predict_fixture: str | None = setting(None, "JSON file of a valid predict payload, the self-test's input.")
    options: dict[str, Any] | None = setting(None, "The runtime's own options, as a table.")  # noqa: RUF009
    payload_log: bool | None = setting(None, "false: this model's inferences are left out of the payload log.")
    load: str | None = setting(
        None, "When the model loads: `startup`, or `lazy` (on its first request); default: `model_load`."
    )
    pin: bool | None = setting(None, "true: the memory budget never unloads this model to make room for another.")
    mcp: bool | None = setting(None, "false: the model is not a tool of the MCP server at `/mcp`; default: `mcp`.")
    cancel: str | None = setting(
        None,
        "A `processes = N` model's call whose client left or whose deadline passed: `finish` (its result is "
        "discarded) or `kill` (its worker process is stopped and replaced).",
    )

    @property
    def is_file(self) -> bool:
        """A model file served through a runtime, not a plugin's model."""
        return self.uri is not None

    @property
    def in_processes(self) -> bool:
        """The model runs in worker processes of its own (``processes`` or ``python`` set)."""
        return self.processes is not None or self.python is not None

    @property
    def worker_processes(self) -> int:
        return self.processes or 1

    @property
    def autoscaling(self) -> bool:
        return any(getattr(self, name) is not None for name in AUTOSCALING_SETTINGS)


@dataclass(frozen=True)
class ModelLimits:
    """One model's effective limits (``Settings.limits_for``)."""

    max_batch_size: int
    max_batch_time: float
    timeout: float
    max_concurrency: int
    max_queue: int
    inline_budget: float
    #: What becomes of a running call nobody waits for (``ModelSettings.cancel``): "finish" or "kill".
    cancel: str = "finish"

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running (a batch holds several) plus waiting."""
        return self.max_concurrency * self.max_batch_size + self.max_queue


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "Address to bind.")
    port: int = setting(8000, "TCP port; without the flag or `STEVEDORE_PORT`, `PORT` sets it (as platforms do).")
    grpc_port: int = setting(8081, "TCP port of the Open Inference Protocol over gRPC, on the same host (0: no gRPC).")
    workers: int = setting(1, "Server processes on the one port, each with its own models.")
    log_level: str = setting("info", "One of " + ", ".join(LOG_LEVELS) + ".")
    log_format: str = setting("text", "text (human-readable) or json (one JSON object a line).")
    access_log: bool = setting(True, "Log one line a request.")
    tracing: bool = setting(
        False,
        "OpenTelemetry traces of every request (the `otel` extra), exported as the `OTEL_*` variables say "
        "(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`, ...).",
    )
    payload_log: str | None = setting(
        None,
        "Where each inference's request and response go: an http(s):// URL (CloudEvents, as KServe's logger sends "
        "them), `file:PATH` (JSON lines) or `-` (standard output).",
    )
    payload_log_mode: str = setting("all", "What the payload log records: " + ", ".join(PAYLOAD_LOG_MODES) + ".")
    payload_log_sample: float = setting(1.0, "Share of inferences the payload log records, from 0 to 1.")
    payload_log_redact: tuple[str, ...] = setting(
        (), "JSON pointers (`/0/email`) of request and response fields redacted before the payload log sees them."
    )
    strict: bool = setting(False, "Any plugin or model failure stops the server (non-zero exit).")
    plugins: tuple[str, ...] | None = setting(None, "Entry-point or distribution names to load (default: all).")
    disable_plugins: tuple[str, ...] = setting((), "Names never to load: the recovery when a plugin breaks.")
    load_models: tuple[str, ...] = setting(
        ("all",),
        "Models loaded at startup: all, none, or model names. The others are listed by the model repository "
        "(`POST /v2/repository/index`) and loaded through it.",
    )
    model_load: str = setting(
        "startup",
        "When models load: `startup`, or `lazy`: listed at once, loaded and self-tested on their first request "
        "(`[models.NAME] load` overrides it).",
    )
    model_memory_budget: int | str | None = setting(
        None,
        "Memory the loaded models of one server process may hold, in bytes or with a unit (`512MiB`, `2GiB`); "
        "loading past it first unloads the least recently used models not pinned (default: no budget).",
    )
    max_models_per_replica: int = setting(
        3, "Ray Serve: lazily loaded models one replica of the multiplexed deployment holds at once."
    )
    max_body_size: int = setting(16 * 1024 * 1024, "Largest request body in bytes; beyond it, 413.")
    max_json_depth: int = setting(64, "Deepest nesting of arrays and objects in a request body; beyond it, 400.")
    max_concurrency: int = setting(
        1, "Inferences of one model running at once (its worker threads; more help models that release the GIL)."
    )
    max_queue: int = setting(64, "Inferences of one model waiting for a thread; beyond it, 503 with Retry-After.")
    timeout: float = setting(60.0, "Seconds an inference may take before the client gets 504.")
    inline_budget: float = setting(
        0.001,
        "Seconds under which a predict call of a model declaring `inline`, as measured at startup, runs on the "
        "event loop (0: never).",
    )
    freeze_heap: bool = setting(
        True,
        "Once the models are loaded, leave every object so far out of garbage collection (`gc.freeze`): full "
        "collections then take under a millisecond instead of tens. Off for a plugin that replaces its model "
        "while serving.",
    )
    shutdown_delay: float = setting(
        0.0,
        "Seconds the server keeps serving after SIGTERM, not ready and answering with `Connection: close`, before "
        "it stops accepting connections. On Kubernetes, 5 to 10: the time endpoints take to drop the pod.",
    )
    graceful_timeout: float = setting(
        30.0, "Seconds in-flight requests get to finish once the server stops accepting connections after SIGTERM."
    )
    api_keys: tuple[str, ...] = setting((), "API keys accepted as `Authorization: Bearer KEY`.", secret=True)
    api_key_file: str | None = setting(None, "File of SHA-256 hex digests of accepted API keys, one a line.")
    auth_health: bool = setting(False, "With API keys, also require one for health and metrics routes.")
    cors_origins: tuple[str, ...] = setting((), "Origins allowed by CORS (`*` for any; default: none).")
    allowed_hosts: tuple[str, ...] | None = setting(
        None,
        "Host names a request's `Host` header may name, any port, or IP networks (`10.0.0.0/8`) its address may "
        "be in (`*` for any); another gets 400. Default: "
        "`localhost`, `127.0.0.1` and `[::1]` when bound to a loopback address (no DNS rebinding), else any.",
    )
    open_reflection: bool = setting(
        False, "With API keys, let gRPC server reflection answer without one (it lists the services)."
    )
    max_connections: int = setting(
        2048,
        "Connections and requests in progress one server process takes at once (uvicorn's `limit_concurrency`); "
        "beyond them, 503.",
    )
    max_concurrent_rpcs: int = setting(
        1024, "gRPC calls, streams included, one server process runs at once; beyond them, RESOURCE_EXHAUSTED."
    )
    max_health_watches: int = setting(
        128,
        "gRPC health `Watch` streams open at once in one server process; beyond them, RESOURCE_EXHAUSTED (0: no "
        "`Watch`).",
    )
    console: bool = setting(True, "Serve the web console at `/`: every model's health, and a form to try each.")
    mcp: bool = setting(
        True,
        "Serve the Model Context Protocol at `/mcp`: every ready model and pipeline a tool (a model's "
        "`[models.NAME]` table may say `mcp = false`).",
    )
    state_dir: str | None = setting(
        None,
        "Directory of the server's state: the jobs database `jobs.db` and the artifacts of trained versions "
        "(default: the user's data directory; `/var/lib/stevedore` in the image).",
    )
    database_url: str | None = setting(
        None,
        "SQLAlchemy URL of the jobs database (`postgresql://...` needs the `postgres` extra); default SQLite. "
        "A secret (it may hold a password): masked, never logged nor written in a generated config; the "
        "variable keeps it off the command line, which every user of the machine can see.",
        secret=True,
        flag=True,
    )
    max_jobs: int = setting(1, "Jobs (trainings) running at once in this server process; the others wait queued.")
    job_grace_period: float = setting(
        10.0, "Seconds a cancelled or stopped job gets after SIGTERM to its process group, before SIGKILL."
    )
    max_job_log_lines: int = setting(
        10000, "Log lines kept of one job; beyond them one line says how many more were dropped."
    )
    job_retention: float = setting(
        7 * 24 * 3600.0, "Seconds a finished job, its result and its logs are kept (0: forever)."
    )
    max_queued_jobs: int = setting(
        100, "Jobs waiting to run, in the whole jobs database; beyond them, 429 with Retry-After (0: no job)."
    )
    max_log_followers: int = setting(
        32,
        "Clients following job logs (`?follow=true`) at once in one server process; beyond them, 429 (0: no "
        "following).",
    )
    promote_trained: bool = setting(
        True, "A version a training makes becomes its model's default (what requests without a version get)."
    )
    max_trained_versions: int = setting(
        10,
        "Trained versions kept of one model; the oldest beyond them is retired with its artifact, never the one "
        "serving by default (0: keep all).",
    )
    model: tuple[str, ...] = setting(
        (),
        "Model files served with no code: `NAME=URI`, or `NAME=RUNTIME:URI` to name the runtime (the flag may be "
        "repeated). As `[models.NAME] uri = ...`.",
        repeated=True,
    )
    allow_pickle: bool = setting(
        False,
        "Read every model file, even in a format that runs code when loaded (pickle, joblib): for a model store "
        "only the operator can write.",
    )
    mlserver: str | None = setting(
        None, "Folder of MLServer `model-settings.json` files (and its `settings.json`), served as they are."
    )
    config: str | None = setting(None, "TOML file of settings; `[models.NAME]` tables hold per-model settings.")
    models: dict[str, ModelSettings] = setting({}, "Per-model settings (file only).", file_only=True)  # noqa: RUF009
    pipelines: dict[str, Any] = setting(  # noqa: RUF009
        {}, "Pipelines of models, called like one model (file only, `[pipelines.NAME]`).", file_only=True
    )
    traffic: dict[str, Any] = setting(  # noqa: RUF009
        {},
        "Names called like a model whose requests go to versions by weight (file only, `[traffic.NAME]`).",
        file_only=True,
    )

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, "port", "is not a TCP port (0-65535)"),
            (0 <= self.grpc_port <= 65535, "grpc_port", "is not a TCP port (0-65535)"),
            (self.grpc_port == 0 or self.grpc_port != self.port, "grpc_port", "is the HTTP port too"),
            (self.workers >= 1, "workers", "must be at least 1"),
            (self.log_level in LOG_LEVELS, "log_level", f"is not one of {', '.join(LOG_LEVELS)}"),
            (self.log_format in LOG_FORMATS, "log_format", f"is not one of {', '.join(LOG_FORMATS)}"),
            (
                self.payload_log is None or PAYLOAD_SINK.match(self.payload_log) is not None,
                "payload_log",
                "is not an http(s):// URL, file:PATH or -",
            ),
            (self.payload_log_mode in PAYLOAD_LOG_MODES, "payload_log_mode", "is not all, request or response"),
            (0 <= self.payload_log_sample <= 1, "payload_log_sample", "is not from 0 to 1"),
            (
                all(pointer.startswith("/") for pointer in self.payload_log_redact),
                "payload_log_redact",
                "holds a JSON pointer not starting with /",
            ),
            (self.model_load in MODEL_LOADS, "model_load", f"is not one of {', '.join(MODEL_LOADS)}"),
            (self.max_models_per_replica >= 1, "max_models_per_replica", "must be at least 1"),
            (self.max_body_size >= 1, "max_body_size", "must be positive"),
            (self.max_json_depth >= 1, "max_json_depth", "must be positive"),
            (self.max_concurrency >= 1, "max_concurrency", "must be at least 1"),
            (self.max_queue >= 0, "max_queue", "must not be negative"),
            (self.timeout > 0, "timeout", "must be positive"),
            (0 <= self.inline_budget <= MAX_INLINE_BUDGET, "inline_budget", f"is not from 0 to {MAX_INLINE_BUDGET}"),
            (self.shutdown_delay >= 0, "shutdown_delay", "must not be negative"),
            (self.graceful_timeout >= 0, "graceful_timeout", "must not be negative"),
            (self.max_jobs >= 1, "max_jobs", "must be at least 1"),
            (self.job_grace_period >= 0, "job_grace_period", "must not be negative"),
            (self.max_job_log_lines >= 1, "max_job_log_lines", "must be at least 1"),
            (self.job_retention >= 0, "job_retention", "must not be negative"),
            (self.max_connections >= 1, "max_connections", "must be at least 1"),
            (self.max_concurrent_rpcs >= 1, "max_concurrent_rpcs", "must be at least 1"),
            (self.max_health_watches >= 0, "max_health_watches", "must not be negative"),
            (self.max_queued_jobs >= 0, "max_queued_jobs", "must not be negative"),
            (self.max_log_followers >= 0, "max_log_followers", "must not be negative"),
            (self.max_trained_versions >= 0, "max_trained_versions", "must not be negative"),
        ]
        if not self.load_models:  # no names: none (``to_env`` could not tell an empty list from an unset one)
            object.__setattr__(self, "load_models", ("none",))
        special = {"all", "none"} & set(self.load_models)
        checks.append((not special or len(self.load_models) == 1, "load_models", "takes all or none alone"))
        for ok, name, problem in checks:
            if not ok:
                raise SettingError(name, f"{getattr(self, name)!r} {problem}")
        if self.model_memory_budget is not None:
            object.__setattr__(self, "model_memory_budget", byte_size("model_memory_budget", self.model_memory_budget))
        object.__setattr__(self, "models", declared_models(self))
        for name, model in self.models.items():
            check_model_settings(name, model)
        if self.database_url is not None:
            check_database_url(self.database_url)
        if self.api_key_file is not None:  # read by the front ends, later: its error names where it came from now
            check_readable("api_key_file", self.api_key_file)

    @property
    def selection(self) -> PluginSelection:
        return PluginSelection.from_names(self.plugins, self.disable_plugins)

    def loads_at_startup(self, name: str) -> bool:
        """Whether ``load_models`` selects the model ``name`` to load at startup."""
        return self.load_models == ("all",) or (self.load_models != ("none",) and name in self.load_models)

    def loads_lazily(self, name: str) -> bool:
        """Whether the model ``name`` loads on its first request: its ``load``, else ``model_load``, says lazy."""
        return (self.for_model(name).load or self.model_load) == "lazy"

    @property
    def memory_budget(self) -> int | None:
        """``model_memory_budget`` in bytes (None: no budget)."""
        budget = self.model_memory_budget
        return budget if isinstance(budget, int) else None

    def is_tool(self, name: str) -> bool:
        """Whether the MCP server lists the model (or pipeline) ``name`` as a tool: its ``mcp``, else ``mcp``."""
        own = self.for_model(name).mcp
        return self.mcp if own is None else own

    def for_model(self, name: str) -> ModelSettings:
        return self.models.get(name, ModelSettings())

    def limits_for(self, predictor: DeclaresLimits) -> ModelLimits:
        """One model's effective limits: its ``[models.NAME]`` table, else the predictor's, else the server's."""
        own = self.for_model(predictor.name)

        def pick(value: Any, fallback: Any) -> Any:
            return fallback if value is None else value

        if own.in_processes:  # as many calls at once as processes, and none on the event loop
            concurrency, inline_budget = pick(own.max_concurrency, own.worker_processes), 0.0
        else:
            concurrency = pick(own.max_concurrency, self.max_concurrency)
            inline_budget = pick(own.inline_budget, self.inline_budget if predictor.inline is True else 0.0)
        return ModelLimits(
            max_batch_size=pick(own.max_batch_size, predictor.max_batch_size),
            max_batch_time=pick(own.max_batch_time, predictor.max_batch_time),
            timeout=pick(own.timeout, self.timeout),
            max_concurrency=concurrency,
            max_queue=pick(own.max_queue, self.max_queue),
            inline_budget=inline_budget,
            cancel=own.cancel or "finish",
        )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, flags_origin: str | None = None, **flags: Any) -> Settings:
        """Defaults, then the TOML file, then ``STEVEDORE_*`` variables, then ``flags`` (CLI; None is unset).

        The port also comes from ``PORT`` (below ``STEVEDORE_PORT``, above the file): Knative, KServe's
        serverless mode and Cloud Run tell a container where to listen so. Below it, ``MLSERVER_HTTP_PORT`` and
        ``MLSERVER_GRPC_PORT`` set ``port`` and ``grpc_port``: an image of ours in KServe's MLServer runtime
        listens where the runtime's ports say. An error names where the wrong value came from: the flag (or
        ``flags_origin``, flags that are no command line's), the variable, or the file and its table."""
        environ = os.environ if environ is None else environ
        flags = {key: value for key, value in flags.items() if value is not None}
        origins = {name: flags_origin or "--" + name.replace("_", "-") for name in flags}
        try:
            return cls(**layered(environ, flags, origins))
        except SettingError as error:
            raise error.located(origin_of(error.setting, origins)) from None

    def to_env(self) -> dict[str, str]:
        """The ``STEVEDORE_*`` variables that, with the file, reproduce these settings in another process."""
        env = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or item.metadata["file_only"]:
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[env_name(item.name)] = str(value)
        return env

    def secret_env(self) -> dict[str, str]:
        """The ``STEVEDORE_*`` variables of the secret settings that are set."""
        secret = {env_name(item.name) for item in fields(self) if item.metadata["secret"]}
        return {name: value for name, value in self.to_env().items() if name in secret and value}

    def document(self) -> dict[str, Any]:
        """The settings shaped as the TOML file (``read_document`` reads it back), without the secrets and the
        file's path: what a Serve config carries to every replica, which takes its secrets from its environment."""
        document: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or item.metadata["secret"] or item.name == "config":
                continue
            document[item.name] = list(value) if isinstance(value, tuple) else value
        document["models"] = {
            name: {key: value for key, value in asdict(model).items() if value is not None}
            for name, model in self.models.items()
        }
        return document

    def masked(self) -> dict[str, Any]:
        """The settings as plain data, secrets replaced by a mask: what `stevedore-server config` prints."""
        values = asdict(self)
        for item in fields(self):
            if item.metadata["secret"] and values[item.name]:
                values[item.name] = MASK
        # A model file's URI may hold a password or a signed URL's signature.
        values["model"] = [masked_uri(entry) for entry in self.model]
        for model in values["models"].values():
            if model["uri"] is not None:
                model["uri"] = masked_uri(model["uri"])
        return values


def layered(environ: Mapping[str, str], flags: dict[str, Any], origins: dict[str, str]) -> dict[str, Any]:
    """The values of the file, the variables and ``flags``, each above the one before; where each came from is
    written into ``origins`` (a model's table under ``models.NAME``)."""
    # A variable set but empty is unset, as click reads its own; one a flag overrides is never read (so an
    # invalid one cannot stop a server the command line configures).
    given = {name: raw for name, raw in environ.items() if raw.strip()}
    variables = {item.name: env_name(item.name) for item in fields(Settings) if not item.metadata["file_only"]}
    variables |= {name: port_variable(name, given) for name in ("port", "grpc_port")}
    from .mlserver import environment_tables

    read = {name: variable for name, variable in variables.items() if name not in flags and variable in given}
    from_env = {name: parse(name, HINTS[name], given[variable], variable) for name, variable in read.items()}
    origins |= {name: variable for name, variable in read.items()}
    path = flags.get("config") or from_env.get("config")
    values = read_file(str(path)) if path else {}
    for name in values:
        origins.setdefault(name, f"in {path}")
    for name in values.get("models", {}):
        origins[f"models.{name}"] = f"in {path}, table [models.{name}]"

    from_mlserver = read_models("the MLSERVER_MODEL_* variables", environment_tables(environ), Path.cwd())
    if from_mlserver:
        models = values.get("models", {})
        values["models"] = {name: merged(model, models.get(name)) for name, model in from_mlserver.items()} | {
            name: model for name, model in models.items() if name not in from_mlserver
        }
        origins |= {f"models.{name}": "the MLSERVER_MODEL_* variables" for name in from_mlserver}
    return values | from_env | flags


def port_variable(setting: str, given: Mapping[str, str]) -> str:
    """The variable a port (``port``, ``grpc_port``) is read from: its own, else for the HTTP port ``PORT`` (as
    platforms set it), else KServe's MLServer runtime's (``MLSERVER_HTTP_PORT``, ``MLSERVER_GRPC_PORT``); its own
    when ``given`` (the variables set) holds none."""
    from .mlserver import PORT_VARIABLES

    order = [env_name(setting), *([PLATFORM_PORT] if setting == "port" else []), PORT_VARIABLES[setting]]
    return next((variable for variable in order if variable in given), env_name(setting))


def environment_port(environ: Mapping[str, str]) -> int:
    """The HTTP port ``environ``'s variables give ``Settings.load`` (``port_variable``'s order; not the file's),
    else the default: where the commands that talk to a running server look for it."""
    given = {name: raw for name, raw in environ.items() if raw.strip()}
    variable = port_variable("port", given)
    if variable not in given:
        return Settings.port  # the field's default
    return int(parse("port", HINTS["port"], given[variable], variable))


def origin_of(setting: str, origins: Mapping[str, str]) -> str | None:
    """Where a setting's value came from: ``origins``' word for it, its model's table's for a per-model one,
    else its default (a model's table known to none came from an MLServer folder, which its errors name)."""
    if setting in origins:
        return origins[setting]
    if setting.startswith("models."):
        return origins.get(".".join(setting.split(".")[:2]))
    return "its default"


#: The settings' types, resolved once (the annotations are strings under PEP 563).
HINTS = typing.get_type_hints(Settings)
MODEL_HINTS = typing.get_type_hints(ModelSettings)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def check_database_url(url: str) -> None:
    """A SQLAlchemy URL; the error does not show it (it may hold a password, and SQLAlchemy's own shows it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError):
        raise SettingError(
            "database_url",
            "not a SQLAlchemy URL such as postgresql://user:password@host/database (not shown here: it may hold a "
            "password)",
        ) from None


def check_readable(setting: str, path: str) -> None:
    """The file a setting names can be read (its reader checks what it holds)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise SettingError(setting, f"cannot read {path}: {error.strerror}") from None


def byte_size(name: str, value: int | str) -> int:
    """``value`` in bytes: an integer, or a number with a unit (``512MiB``, ``2GiB``, ``1.5GB``); SettingError
    naming ``name`` otherwise."""
    if isinstance(value, int):
        size = value
    else:
        match = BYTE_SIZE.match(value)
        factors = {unit.upper(): factor for unit, factor in BYTE_UNITS.items()} | {"": 1}
        factor = factors.get(match.group(2).upper()) if match else None
        if match is None or factor is None:
            units = ", ".join(BYTE_UNITS)
            raise SettingError(name, f"{value!r} is not a size: bytes, or a number with a unit ({units})")
        size = int(float(match.group(1)) * factor)
    if size < 1:
        raise SettingError(name, f"{value!r} must be positive")
    return size


def check_model_settings(name: str, model: ModelSettings) -> None:
    prefix = f"models.{name}"
    if model.load is not None and model.load not in MODEL_LOADS:
        raise SettingError(f"{prefix}.load", f"{model.load!r} is not one of {', '.join(MODEL_LOADS)}")
    if model.cancel is not None and model.cancel not in CANCEL_MODES:
        raise SettingError(f"{prefix}.cancel", f"{model.cancel!r} is not one of {', '.join(CANCEL_MODES)}")
    if model.cancel == "kill" and not model.in_processes:  # a thread cannot be stopped; a process can
        raise SettingError(f"{prefix}.cancel", "kill needs processes = N or python = ...")
    if model.max_batch_size is not None and model.max_batch_size < 1:
        raise SettingError(f"{prefix}.max_batch_size", f"{model.max_batch_size} must be at least 1")
    if model.inline_budget is not None and not 0 <= model.inline_budget <= MAX_INLINE_BUDGET:
        raise SettingError(f"{prefix}.inline_budget", f"{model.inline_budget} is not from 0 to {MAX_INLINE_BUDGET}")
    for attribute in ("max_batch_time", "timeout"):
        value = getattr(model, attribute)
        if value is not None and value < 0:
            raise SettingError(f"{prefix}.{attribute}", f"{value} must not be negative")
    if model.max_concurrency is not None and model.max_concurrency < 1:
        raise SettingError(f"{prefix}.max_concurrency", f"{model.max_concurrency} must be at least 1")
    if model.max_queue is not None and model.max_queue < 0:
        raise SettingError(f"{prefix}.max_queue", f"{model.max_queue} must not be negative")
    if model.processes is not None and not 1 <= model.processes <= MAX_PROCESSES:
        raise SettingError(f"{prefix}.processes", f"{model.processes} is not from 1 to {MAX_PROCESSES}")
    if model.sha256 is not None and not SHA256.match(model.sha256):
        raise SettingError(f"{prefix}.sha256", f"{model.sha256!r} is not a SHA-256 digest (64 hexadecimal digits)")
    if model.python is not None and not model.python.strip():
        raise SettingError(f"{prefix}.python", "an interpreter path or a virtual environment directory, not empty")
    for attribute in ("replicas", "min_replicas", "max_replicas", "max_replicas_per_node"):
        value = getattr(model, attribute)
        if value is not None and value < (0 if attribute == "min_replicas" else 1):
            raise SettingError(
                f"{prefix}.{attribute}", f"{value} must be at least {0 if attribute == 'min_replicas' else 1}"
            )
    if model.replicas is not None and model.autoscaling:
        raise SettingError(f"{prefix}.replicas", "a fixed number of replicas and autoscaling exclude each other")
    low, high = model.min_replicas, model.max_replicas
    if low is not None and high is not None and low > high:
        raise SettingError(f"{prefix}.min_replicas", f"{low} is more than max_replicas {high}")
    for attribute in ("upscale_delay", "downscale_delay"):
        value = getattr(model, attribute)
        if value is not None and value < 0:
            raise SettingError(f"{prefix}.{attribute}", f"{value} must not be negative")
    if model.target_ongoing_requests is not None and model.target_ongoing_requests <= 0:
        raise SettingError(f"{prefix}.target_ongoing_requests", f"{model.target_ongoing_requests} must be positive")


#: ``NAME=URI`` or ``NAME=RUNTIME:URI`` (``--model``); a URI's own scheme is followed by ``//``, a runtime is not.
MODEL_ENTRY = re.compile(r"\A(?P<name>[A-Za-z0-9._-]+)=(?:(?P<runtime>[a-z][a-z0-9_-]+):(?!//))?(?P<uri>.+)\Z")
#: A pinned artifact's digest.
SHA256 = re.compile(r"\A[0-9A-Fa-f]{64}\Z")
#: A URI with a scheme (``s3://``, ``file://``); anything else is a local path.
SCHEME = re.compile(r"\A[a-z][a-z0-9+.-]*://")
#: Per-model settings that are paths, resolved against the settings file's folder.
PATH_SETTINGS = ("uri", "predict_schema", "predict_fixture")


def declared_models(settings: Settings) -> dict[str, ModelSettings]:
    """The ``[models.NAME]`` tables with the model files declared elsewhere merged in: an MLServer folder's
    (below the tables), then ``--model`` entries (above them). Merging what is merged already changes nothing."""
    models = dict(settings.models)
    if settings.mlserver:
        from .mlserver import mlserver_tables

        for name, model in read_models(settings.mlserver, mlserver_tables(Path(settings.mlserver))).items():
            models[name] = merged(model, models.get(name))
    for entry in settings.model:
        match = MODEL_ENTRY.match(entry.strip())
        if match is None:
            raise SettingError("model", f"{entry!r} is not NAME=URI or NAME=RUNTIME:URI")
        name, uri = match["name"], absolute(match["uri"], Path.cwd())
        own = models.get(name, ModelSettings())
        models[name] = dataclasses.replace(own, uri=uri, runtime=match["runtime"] or own.runtime)
    return models


def masked_uri(uri: str) -> str:
    """``uri`` (or a ``NAME=[RUNTIME:]URI`` entry's) with any user, password and query masked."""
    entry = MODEL_ENTRY.match(uri)
    if entry is not None:
        runtime = f"{entry['runtime']}:" if entry["runtime"] else ""
        return f"{entry['name']}={runtime}{masked_uri(entry['uri'])}"
    parts = urlsplit(uri)
    if not parts.query and "@" not in parts.netloc:
        return uri
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    return urlunsplit((parts.scheme, netloc, parts.path, MASK if parts.query else "", ""))


def merged(low: ModelSettings, high: ModelSettings | None) -> ModelSettings:
    """``high``'s settings, and ``low``'s where ``high`` leaves one unset."""
    if high is None:
        return low
    given = {key: value for key, value in asdict(high).items() if value is not None}
    return dataclasses.replace(low, **given)


def absolute(uri: str, base: Path) -> str:
    """A local path made absolute against ``base``; a URI with a scheme unchanged."""
    if SCHEME.match(uri):
        return uri
    return str((base / Path(uri).expanduser()).resolve())


def read_file(path: str) -> dict[str, Any]:
    """Top-level settings and ``[models.NAME]`` tables of a TOML file, type-checked, unknown keys refused."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise SettingError("config", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingError("config", f"{path} is not valid TOML: {error}") from None
    return read_document(document, path, Path(path).resolve().parent)


def read_document(document: Mapping[str, Any], where: str, base: Path | None = None) -> dict[str, Any]:
    """Settings from a document shaped as the TOML file (the file, a Serve config's ``args``), type-checked;
    relative paths of models are taken from ``base`` (the file's folder)."""
    known = {item.name: item for item in fields(Settings) if item.name != "config"}
    values: dict[str, Any] = {}
    for key, raw in document.items():
        if key not in known:
            raise SettingError(key, "no such setting" + did_you_mean(key, known, most=1), f"in {where}")
        if key == "models":
            values["models"] = read_models(where, raw, base)
        elif key == "pipelines":
            values["pipelines"] = read_pipelines(where, raw)
        elif key == "traffic":
            values["traffic"] = read_traffic(where, raw)
        else:
            values[key] = typed(key, HINTS[key], raw, where)
    return values


def read_models(path: str, tables: Any, base: Path | None = None) -> dict[str, ModelSettings]:
    if not isinstance(tables, dict) or not all(isinstance(table, dict) for table in tables.values()):
        raise SettingError("models", "must be [models.NAME] tables", f"in {path}")
    known = {item.name: item for item in fields(ModelSettings)}
    models = {}
    for name, table in tables.items():
        where = f"{path}, table [models.{name}]"
        for key in table:
            if key not in known:
                problem = "no such per-model setting" + did_you_mean(key, known, most=1)
                raise SettingError(f"models.{name}.{key}", problem, f"in {where}")
        values = {key: typed(f"models.{name}.{key}", MODEL_HINTS[key], raw, where) for key, raw in table.items()}
        for key in PATH_SETTINGS:
            if base is not None and values.get(key) is not None:
                values[key] = absolute(values[key], base)
        models[name] = ModelSettings(**values)
    return models
