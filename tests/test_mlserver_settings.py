"""MLServer's model settings read as ours: a folder of ``model-settings.json`` files (``--mlserver DIR``), its
``settings.json``, the ``MLSERVER_MODEL_*`` variables and the ports of KServe's MLServer runtime."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.base.settings.mlserver import environment_tables, mlserver_tables

KSERVE = {
    "MLSERVER_MODEL_NAME": "iris",
    "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel",
    "MLSERVER_MODEL_URI": "/mnt/models",
}


def write(folder: Path, document: dict[str, Any], name: str = "model-settings.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(document))
    return path


def test_mlservers_runtimes_become_ours_and_uris_are_relative_to_their_file(tmp_path: Path) -> None:
    write(
        tmp_path / "iris",
        {
            "name": "iris",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1", "content_type": "np"},
            "max_batch_size": 8,
            "max_batch_time": 0.5,
        },
    )
    write(tmp_path / "deep" / "er" / "boost", {"implementation": "mlserver_xgboost.XGBoostModel"})
    write(tmp_path / "gbm", {"name": "gbm", "implementation": "mlserver_lightgbm.LightGBMModel"})
    write(tmp_path / "flow", {"name": "flow", "implementation": "mlserver_mlflow.MLflowRuntime"})
    tables = mlserver_tables(tmp_path)
    assert tables["iris"] == {
        "uri": str(tmp_path / "iris" / "model.joblib"),
        "runtime": "sklearn",
        "version": "v1",
        "content_type": "np",
        "max_batch_size": 8,
        "max_batch_time": 0.5,
    }
    # No name: the folder's (as MLServer); no uri: the folder itself; found at any depth.
    assert tables["boost"] == {"uri": str(tmp_path / "deep" / "er" / "boost"), "runtime": "xgboost"}
    assert tables["gbm"]["runtime"] == "lightgbm"
    assert tables["flow"]["runtime"] == "mlflow"


def test_a_custom_runtime_goes_to_the_adapter_with_its_settings(tmp_path: Path) -> None:
    document = {
        "name": "doubler",
        "implementation": "models.Doubler",
        "parameters": {"uri": "weights.json", "extra": {"factor": 2}},
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
    }
    write(tmp_path / "doubler", document)
    table = mlserver_tables(tmp_path)["doubler"]
    assert table["runtime"] == "mlserver"
    assert table["uri"] == str(tmp_path / "doubler" / "weights.json")
    assert table["options"] == {
        "implementation": "models.Doubler",
        "model_settings": document,
        "folder": str(tmp_path / "doubler"),
    }


def test_settings_json_parallel_workers_is_every_models_default(tmp_path: Path) -> None:
    write(tmp_path, {"parallel_workers": 2, "http_port": 9999}, "settings.json")
    write(tmp_path / "a", {"implementation": "mlserver_sklearn.SKLearnModel"})
    write(tmp_path / "b", {"implementation": "mlserver_sklearn.SKLearnModel", "parallel_workers": 0})
    write(tmp_path / "c", {"implementation": "mlserver_sklearn.SKLearnModel", "parallel_workers": 3})
    tables = mlserver_tables(tmp_path)
    assert [tables[name].get("processes") for name in "abc"] == [2, None, 3]


def test_batching_of_0_or_1_is_off(tmp_path: Path) -> None:
    write(tmp_path / "a", {"implementation": "mlserver_sklearn.SKLearnModel", "max_batch_size": 1})
    write(tmp_path / "b", {"implementation": "mlserver_sklearn.SKLearnModel", "max_batch_size": 0})
    tables = mlserver_tables(tmp_path)
    assert "max_batch_size" not in tables["a"] and "max_batch_size" not in tables["b"]


def test_an_environment_path_is_the_models_python(tmp_path: Path) -> None:
    write(tmp_path / "a", {"implementation": "x.Y", "parameters": {"environment_path": "../env"}})
    assert mlserver_tables(tmp_path)["a"]["python"] == str(tmp_path / "env")


def test_what_does_not_map_is_logged_with_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, {"debug": False}, "settings.json")
    write(
        tmp_path / "a",
        {
            "name": "logged-model",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "platform": "sklearn",
            "cache_enabled": True,
            "parameters": {"format": "joblib", "extra": {"x": 1}},
        },
    )
    with caplog.at_level(logging.INFO, "stevedore.settings"):
        mlserver_tables(tmp_path)
    logged = caplog.text
    assert "platform ignored: metadata only" in logged
    assert "cache_enabled ignored: no response cache" in logged
    assert "parameters.format ignored" in logged
    assert "parameters.extra ignored: only the mlserver runtime takes it" in logged
    assert "debug ignored: a server setting" in logged


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "a"}, "no implementation"),
        ({"implementation": "x.Y", "parameters": {"environment_tarball": "env.tar.gz"}}, "environment_tarball"),
        ({"implementation": "x.Y", "max_batch_time": "soon"}, "max_batch_time 'soon' is not seconds"),
        ({"implementation": "x.Y", "parallel_workers": -1}, "parallel_workers -1 is not a whole number"),
        ({"implementation": "x.Y", "parameters": []}, "parameters must be an object"),
        ({"implementation": 3}, "implementation 3 is not a string"),
    ],
)
def test_what_cannot_map_stops_startup_saying_why(tmp_path: Path, document: dict[str, Any], message: str) -> None:
    path = write(tmp_path / "a", document)
    with pytest.raises(StartupError, match=message) as raised:
        mlserver_tables(tmp_path)
    assert str(path) in str(raised.value)


def test_a_broken_file_or_folder_stops_startup(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model-settings.json").write_text("{nope")
    with pytest.raises(StartupError, match="is not valid JSON"):
        mlserver_tables(tmp_path)
    with pytest.raises(StartupError, match="is not a folder"):
        mlserver_tables(tmp_path / "missing")


def test_two_files_of_one_name_stop_startup(tmp_path: Path) -> None:
    write(tmp_path / "v1", {"name": "iris", "implementation": "x.Y", "parameters": {"version": "v1"}})
    write(tmp_path / "v2", {"name": "iris", "implementation": "x.Y", "parameters": {"version": "v2"}})
    with pytest.raises(StartupError, match="both declare model 'iris'"):
        mlserver_tables(tmp_path)


def test_the_mlserver_setting_serves_the_folders_models(tmp_path: Path) -> None:
    write(tmp_path / "iris", {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel"})
    settings = Settings.load({"STEVEDORE_MLSERVER": str(tmp_path)})
    iris = settings.models["iris"]
    assert (iris.runtime, iris.uri, iris.is_file) == ("sklearn", str(tmp_path / "iris"), True)


def test_kserves_mlserver_variables_are_one_model() -> None:
    assert environment_tables({}) == {}
    assert environment_tables(KSERVE) == {"iris": {"uri": "/mnt/models", "runtime": "sklearn"}}
    table = environment_tables(
        KSERVE
        | {
            "MLSERVER_MODEL_IMPLEMENTATION": "models.Custom",
            "MLSERVER_MODEL_VERSION": "v2",
            "MLSERVER_MODEL_MAX_BATCH_SIZE": "4",
            "MLSERVER_MODEL_MAX_BATCH_TIME": "0.1",
            "MLSERVER_MODEL_PARALLEL_WORKERS": "2",
            "MLSERVER_MODEL_EXTRA": '{"factor": 3}',
        }
    )["iris"]
    assert table["runtime"] == "mlserver"
    assert (table["version"], table["max_batch_size"], table["max_batch_time"], table["processes"]) == (
        "v2",
        4,
        0.1,
        2,
    )
    assert table["options"]["model_settings"]["parameters"]["extra"] == {"factor": 3}
    settings = Settings.load(KSERVE)
    assert (settings.models["iris"].uri, settings.models["iris"].runtime) == ("/mnt/models", "sklearn")


def test_a_relative_mlserver_model_uri_is_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(KSERVE | {"MLSERVER_MODEL_URI": "models/iris"})
    assert settings.models["iris"].uri == str(tmp_path / "models" / "iris")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLSERVER_MODEL_NAME": "iris"}, "not MLSERVER_MODEL_IMPLEMENTATION"),
        ({"MLSERVER_MODEL_IMPLEMENTATION": "x.Y"}, "not MLSERVER_MODEL_NAME"),
        (KSERVE | {"MLSERVER_MODEL_EXTRA": "{"}, "MLSERVER_MODEL_EXTRA is not JSON"),
        (KSERVE | {"MLSERVER_MODEL_MAX_BATCH_SIZE": "many"}, "max_batch_size 'many' is not a whole number"),
    ],
)
def test_incomplete_or_wrong_variables_stop_startup(environ: dict[str, str], message: str) -> None:
    with pytest.raises(StartupError, match=message):
        Settings.load(environ)


def test_kserves_mlserver_ports_are_honoured_below_ours() -> None:
    ports = {"MLSERVER_HTTP_PORT": "8080", "MLSERVER_GRPC_PORT": "9000"}
    settings = Settings.load(ports)
    assert (settings.port, settings.grpc_port) == (8080, 9000)
    assert Settings.load(ports | {"PORT": "8012"}).port == 8012
    assert Settings.load(ports | {"STEVEDORE_GRPC_PORT": "9100"}).grpc_port == 9100
    assert Settings.load(ports, port=7000, grpc_port=7001).port == 7000
    with pytest.raises(StartupError, match="MLSERVER_HTTP_PORT"):
        Settings.load({"MLSERVER_HTTP_PORT": "http"})
