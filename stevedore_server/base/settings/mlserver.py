"""MLServer's model settings as ours: a folder of ``model-settings.json`` files (``--mlserver DIR``) and the
``MLSERVER_MODEL_*`` variables of KServe's MLServer runtime, read as ``[models.NAME]`` tables.

Only reads JSON and maps names: the tables are type-checked by ``model.read_models`` like the settings file's.
What maps, what is ignored (with the reason, logged) and what is refused is listed in ``MAPPED``, ``IGNORED`` and
``REFUSED`` below (and in ``plugins/mlserver/README.md``), as of MLServer 1.7.1:

- MLServer's own runtimes of scikit-learn, XGBoost, LightGBM and MLflow become ours (``RUNTIMES``); any other
  implementation runs unchanged through the ``mlserver`` runtime (``plugins/mlserver``), which is handed the
  implementation's dotted path, the file's JSON and its folder as ``options``;
- ``parameters.uri`` is relative to the file's folder (the folder itself without one), as MLServer reads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stevedore_server.base.errors import SettingError, StartupError

logger = logging.getLogger("stevedore.settings")

MODEL_SETTINGS = "model-settings.json"
SERVER_SETTINGS = "settings.json"
#: The runtime that runs any other ``MLModel`` implementation unchanged.
ADAPTER = "mlserver"
#: MLServer's runtimes that ours read the same files of.
RUNTIMES = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
    "mlserver_mlflow.MLflowRuntime": "mlflow",
    # The same classes by the modules that define them.
    "mlserver_sklearn.sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.lightgbm.LightGBMModel": "lightgbm",
    "mlserver_mlflow.runtime.MLflowRuntime": "mlflow",
}
#: What each mapped key of a ``model-settings.json`` becomes (``parameters.*``: keys of its ``parameters``).
MAPPED = {
    "name": "the model's name (default: the file's folder's name, as MLServer)",
    "implementation": "runtime (MLServer's scikit-learn, XGBoost, LightGBM, MLflow runtimes: ours; else mlserver)",
    "parameters.uri": "uri (relative to the file's folder; default the folder)",
    "parameters.version": "version",
    "parameters.content_type": "content_type",
    "parameters.environment_path": "python (the model runs in that environment's worker processes)",
    "max_batch_size": "max_batch_size (0 or 1: off)",
    "max_batch_time": "max_batch_time",
    "parallel_workers": "processes (0: none); settings.json's is every model's default",
    "inputs": "the mlserver runtime: the V2 inputs, schema and fixture; others: their artifact's own",
    "outputs": "the mlserver runtime: the V2 outputs; others: their artifact's own",
    "parameters.extra": "the mlserver runtime: handed to the model unchanged",
}
#: Keys read and ignored, with the reason (logged once a file).
IGNORED = {
    "platform": "metadata only",
    "versions": "metadata only",
    "warm_workers": "deprecated by MLServer; every model is loaded and self-tested before it serves",
    "cache_enabled": "no response cache: a prediction is computed each time",
    "parameters.format": "the runtime reads the format from the file itself",
    "parameters.inference_pool_gid": "each model with processes has its own pool already",
    "parameters.autogenerate_inference_pool_gid": "each model with processes has its own pool already",
    "parameters.extra": "only the mlserver runtime takes it (our runtimes take `options` in [models.NAME])",
    "inputs": "our runtimes derive the inputs from the artifact",
    "outputs": "our runtimes derive the outputs from the artifact",
}
#: Keys refused (the server does not start), with what to do.
REFUSED = {
    "parameters.environment_tarball": "unpack it and give its folder as parameters.environment_path",
}
#: settings.json keys read; the others are the server's own (ports, logging, ...): set them as stevedore's.
SERVER_MAPPED = ("parallel_workers",)
#: What MLServer's ``MLSERVER_MODEL_*`` variables set (pydantic-settings' names of ModelSettings and parameters).
ENVIRONMENT = {
    "MLSERVER_MODEL_NAME": "name",
    "MLSERVER_MODEL_IMPLEMENTATION": "implementation",
    "MLSERVER_MODEL_URI": "parameters.uri",
    "MLSERVER_MODEL_VERSION": "parameters.version",
    "MLSERVER_MODEL_CONTENT_TYPE": "parameters.content_type",
    "MLSERVER_MODEL_ENVIRONMENT_PATH": "parameters.environment_path",
    "MLSERVER_MODEL_ENVIRONMENT_TARBALL": "parameters.environment_tarball",
    "MLSERVER_MODEL_FORMAT": "parameters.format",
    "MLSERVER_MODEL_EXTRA": "parameters.extra",
    "MLSERVER_MODEL_MAX_BATCH_SIZE": "max_batch_size",
    "MLSERVER_MODEL_MAX_BATCH_TIME": "max_batch_time",
    "MLSERVER_MODEL_PARALLEL_WORKERS": "parallel_workers",
    "MLSERVER_MODEL_PLATFORM": "platform",
    "MLSERVER_MODEL_INPUTS": "inputs",
    "MLSERVER_MODEL_OUTPUTS": "outputs",
}
#: Variables whose value is JSON (pydantic-settings reads complex fields so).
JSON_VARIABLES = ("MLSERVER_MODEL_EXTRA", "MLSERVER_MODEL_INPUTS", "MLSERVER_MODEL_OUTPUTS")
#: KServe's MLServer runtime's ports: honoured as ``PORT`` is (below the flags and ``STEVEDORE_*``).
PORT_VARIABLES = {"port": "MLSERVER_HTTP_PORT", "grpc_port": "MLSERVER_GRPC_PORT"}


def mlserver_tables(folder: Path) -> dict[str, dict[str, Any]]:
    """The ``[models.NAME]`` tables of the ``model-settings.json`` files under ``folder`` (at any depth, as
    MLServer's repository finds them), with its ``settings.json``'s defaults. An error is the ``mlserver``
    setting's, so ``Settings.load`` names where the folder came from (the flag, the variable, the file)."""
    try:
        return folder_tables(folder)
    except StartupError as error:
        raise SettingError("mlserver", str(error)) from None


def folder_tables(folder: Path) -> dict[str, dict[str, Any]]:
    if not folder.is_dir():
        raise StartupError(f"{folder} is not a folder")
    defaults = server_defaults(folder)
    tables: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    for path in sorted(folder.rglob(MODEL_SETTINGS)):
        name, table = model_table(path.parent, read_object(path), defaults, str(path))
        if name in tables:
            raise StartupError(
                f"{path} and {sources[name]} both declare model {name!r}; stevedore serves one model file a name: "
                "give each its own name"
            )
        tables[name], sources[name] = table, path
    if not tables:
        logger.warning("setting mlserver: no %s under %s", MODEL_SETTINGS, folder)
    return tables


def environment_tables(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The ``[models.NAME]`` table of the ``MLSERVER_MODEL_*`` variables (none without them)."""
    given = {key: environ[key] for key in ENVIRONMENT if environ.get(key, "").strip()}
    if not given:
        return {}
    where = "the MLSERVER_MODEL_* variables"
    for required in ("MLSERVER_MODEL_IMPLEMENTATION", "MLSERVER_MODEL_NAME"):
        if required not in given:
            raise StartupError(f"{where}: {', '.join(given)} set but not {required}, which MLServer needs too")
    document: dict[str, Any] = {}
    for variable, raw in given.items():
        value = json_variable(variable, raw) if variable in JSON_VARIABLES else raw.strip()
        put(document, ENVIRONMENT[variable], value)
    # MLServer reads a relative URI (and finds the implementation's module) from its working directory.
    name, table = model_table(Path.cwd(), document, {}, where)
    return {name: table}


# -- one file -------------------------------------------------------------------


def read_object(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StartupError(f"cannot read {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise StartupError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise StartupError(f"{path} must hold a JSON object")
    return document


def server_defaults(folder: Path) -> dict[str, Any]:
    """What the folder's ``settings.json`` sets of every model (``parallel_workers``); the rest is logged."""
    path = folder / SERVER_SETTINGS
    if not path.is_file():
        return {}
    document = read_object(path)
    for key in sorted(set(document) - set(SERVER_MAPPED)):
        log_ignored(path, key, "a server setting: set stevedore's own (`stevedore-server run --help`)")
    return {key: document[key] for key in SERVER_MAPPED if key in document}


def model_table(
    folder: Path, document: dict[str, Any], defaults: dict[str, Any], where: str
) -> tuple[str, dict[str, Any]]:
    """A model's name and ``[models.NAME]`` table from one ``model-settings.json``'s JSON (in ``folder``)."""
    parameters = document.get("parameters")
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise StartupError(f"{where}: parameters must be an object")
    refuse(where, document, parameters)
    name = text(where, "name", document.get("name")) or folder.resolve().name  # `--mlserver .` has a name too
    implementation = text(where, "implementation", document.get("implementation"))
    if not implementation:
        raise StartupError(f"{where}: no implementation (MLServer needs one too)")
    uri = text(where, "parameters.uri", parameters.get("uri"))
    table: dict[str, Any] = {"uri": resolved_uri(folder, uri)}
    runtime = RUNTIMES.get(implementation, ADAPTER)
    table["runtime"] = runtime
    for key, setting in (("version", "version"), ("content_type", "content_type"), ("environment_path", "python")):
        value = text(where, f"parameters.{key}", parameters.get(key))
        if value:
            table[setting] = value if setting != "python" else resolved_uri(folder, value)
    table |= batching(where, document)
    workers = whole(where, "parallel_workers", document.get("parallel_workers", defaults.get("parallel_workers")))
    if workers:
        table["processes"] = workers
    if runtime == ADAPTER:
        table["options"] = {"implementation": implementation, "model_settings": document, "folder": str(folder)}
    log_unmapped(where, document, parameters, runtime)
    return name, table


def refuse(where: str, document: dict[str, Any], parameters: dict[str, Any]) -> None:
    for key, advice in REFUSED.items():
        holder, _, leaf = key.rpartition(".")
        if (parameters if holder else document).get(leaf) is not None:
            raise StartupError(f"{where}: {key} is not supported: {advice}")


def batching(where: str, document: dict[str, Any]) -> dict[str, Any]:
    """MLServer's adaptive batching (0 or 1: off, as there)."""
    table: dict[str, Any] = {}
    size = whole(where, "max_batch_size", document.get("max_batch_size"))
    if size and size > 1:
        table["max_batch_size"] = size
    wait = document.get("max_batch_time")
    if wait is not None:
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise StartupError(f"{where}: max_batch_time {wait!r} is not seconds")
        table["max_batch_time"] = float(wait)
    return table


def resolved_uri(folder: Path, uri: str | None) -> str:
    """MLServer's reading of ``parameters.uri``: relative to the file's folder; none, the folder itself."""
    if not uri:
        return str(folder.resolve())
    if "://" in uri:
        return uri
    return os.path.normpath(folder.resolve() / uri)


def text(where: str, key: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise StartupError(f"{where}: {key} {value!r} is not a string")


def whole(where: str, key: str, value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():  # from a variable
        return int(value)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise StartupError(f"{where}: {key} {value!r} is not a whole number")


def json_variable(variable: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as error:
        raise StartupError(f"the MLSERVER_MODEL_* variables: {variable} is not JSON: {error}") from None


def put(document: dict[str, Any], dotted: str, value: Any) -> None:
    holder, _, leaf = dotted.rpartition(".")
    target = document.setdefault(holder, {}) if holder else document
    if dotted in ("max_batch_size", "parallel_workers"):
        value = whole("the MLSERVER_MODEL_* variables", dotted, value)
    elif dotted == "max_batch_time":
        try:
            value = float(value)
        except ValueError:
            raise StartupError(f"the MLSERVER_MODEL_* variables: max_batch_time {value!r} is not seconds") from None
    target[leaf] = value


# -- what does not map ---------------------------------------------------------------

#: Keys only the mlserver runtime reads (the others ignore them).
ADAPTER_ONLY = ("inputs", "outputs", "parameters.extra")
_logged: set[tuple[str, str]] = set()


def log_unmapped(where: str, document: dict[str, Any], parameters: dict[str, Any], runtime: str) -> None:
    given = [key for key, value in document.items() if key != "parameters" and value not in (None, [], {})]
    given += [f"parameters.{key}" for key, value in parameters.items() if value not in (None, [], {})]
    for key in given:
        if key in IGNORED and not (runtime == ADAPTER and key in ADAPTER_ONLY):
            log_ignored(where, key, IGNORED[key])
        elif key not in MAPPED and key not in IGNORED:
            log_ignored(where, key, unknown_reason(key, runtime))


def unknown_reason(key: str, runtime: str) -> str:
    if not key.startswith("parameters."):
        return "not an MLServer 1.7.1 model setting (MLServer ignores it too)"
    if runtime == ADAPTER:
        return "not one of stevedore's: the model still finds it in its settings' parameters"
    return "a runtime's own parameter of MLServer's, which our runtime has no use for"


def log_ignored(where: str | Path, key: str, reason: str) -> None:
    """Say once a process (settings are read again by each worker) that ``key`` is ignored, and why."""
    if (str(where), key) in _logged:
        return
    _logged.add((str(where), key))
    # A warning: read before the server configures its logging, only warnings reach the terminal then.
    logger.warning("setting mlserver (%s): %s ignored: %s", where, key, reason)
