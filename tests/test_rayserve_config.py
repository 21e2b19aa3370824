"""The Ray Serve application's configuration, without Ray: per-model deployment settings, the Serve config
file (``stevedore-server ray --config-only``), the settings carried to the replicas, the secrets carried to the
ingress in a file of its own, and what crosses from a replica to the ingress (errors pickled whole). The
application on a real cluster: ``test_ray.py``."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient

from stevedore_server.base.errors import InvalidPayload, Overloaded, ReportedFailure, StartupError
from stevedore_server.base.settings import Settings, read_document
from stevedore_server.cli import main
from stevedore_server.core.statistics import ModelStatistics
from stevedore_server.frontends.state import of_lifespan
from stevedore_server.predictor import Predictor
from stevedore_server.rayserve.config import (
    IMPORT_PATH,
    INGRESS,
    SECRETS_FILE,
    application_args,
    ingress_options,
    model_options,
    secrets_directory,
    serve_config,
    settings_from_args,
    write_secrets,
)

V2_ROWS = {"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}


class Batched(Predictor):
    name = "batched"
    max_batch_size = 8
    predict_schema = {"type": "array"}
    predict_fixture = [1]


def settings_with(tmp_path: Path, toml: str, **values: Any) -> Settings:
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    return Settings.load({}, config=str(path), **values)


def test_a_model_without_a_table_gets_one_replica_of_one_cpu() -> None:
    options = model_options(Settings(), Batched())
    assert options["num_replicas"] == 1
    assert "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0}


def test_replicas_and_actor_options_come_from_the_models_table(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, "[models.batched]\nreplicas = 3\nray_actor_options = {num_cpus = 0.5, memory = 1e9}"
    )
    options = model_options(settings, Batched())
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "memory": 1e9}


def test_any_autoscaling_setting_turns_autoscaling_on(tmp_path: Path) -> None:
    toml = "[models.batched]\nmax_replicas = 4\ntarget_ongoing_requests = 3\nupscale_delay = 2\ndownscale_delay = 20"
    options = model_options(settings_with(tmp_path, toml), Batched())
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0,
        "upscale_delay_s": 2.0, "downscale_delay_s": 20.0,
    }  # fmt: skip


def test_a_replica_admits_what_the_models_limits_admit(tmp_path: Path) -> None:
    """Serve sends a replica no more than its runtime admits: running (in batches) and waiting."""
    settings = settings_with(tmp_path, "max_queue = 10\n[models.batched]\nmax_concurrency = 2")
    assert model_options(settings, Batched())["max_ongoing_requests"] == 2 * 8 + 10


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("replicas = 2\nmax_replicas = 3", "a fixed number of replicas and autoscaling exclude each other"),
        ("min_replicas = 3\nmax_replicas = 2", "min_replicas .*table .*: 3 is more than max_replicas 2"),
        ("replicas = 0", "replicas .*table .*: 0 must be at least 1"),
        ("target_ongoing_requests = 0", "must be positive"),
        ("downscale_delay = -1", "downscale_delay .*table .*: -1.0 must not be negative"),
        ("ray_actor_options = 2", "ray_actor_options (in "),
    ],
)
def test_bad_deployment_settings_name_the_setting(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(StartupError, match=f"models.batched.*{message}".replace("(", r"\(")):
        settings_with(tmp_path, f"[models.batched]\n{table}")


def test_the_settings_reach_the_replicas_without_secrets(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path, "[models.batched]\nreplicas = 2\nray_actor_options = {num_cpus = 0.5}",
        api_keys=("s3cret",), max_queue=7, plugins=("a", "b"),
    )  # fmt: skip
    document = settings.document()
    assert "api_keys" not in document and "config" not in document
    assert "s3cret" not in repr(document)
    again = Settings(**read_document(document, "test"))
    assert again.max_queue == 7 and again.plugins == ("a", "b") and again.api_keys == ()
    assert again.models == settings.models
    assert settings.secret_env() == {"STEVEDORE_API_KEYS": "s3cret"}


API_KEY = "s3cret-api-key"
DATABASE_URL = "postgresql://jobs:pa55word@db.example/jobs"


def test_the_secrets_reach_the_ingress_in_a_file_only_its_user_reads_never_in_the_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``stevedore-server ray`` deploys: the builder's arguments and the ingress's options (which Ray shows,
    and whose ``runtime_env`` every process the ingress starts inherits) hold no secret, only the path of a file
    readable by its owner alone, which the ingress reads them back from; the model replicas get none."""
    for name in ("STEVEDORE_API_KEYS", "STEVEDORE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.load({}, api_keys=(API_KEY,), database_url=DATABASE_URL, state_dir=str(tmp_path / "state"))
    path = write_secrets(settings.secret_env(), secrets_directory(settings))
    args = application_args(settings, path)
    options = ingress_options(settings, "node:10.0.0.7")
    deployed = yaml.safe_dump({"args": args, "ingress": options, "config": serve_config(settings, [], "0.0.0.0", 80)})
    for secret in (API_KEY, DATABASE_URL, "pa55word"):
        assert secret not in deployed
    assert "runtime_env" not in deployed
    assert options["ray_actor_options"]["resources"] == {"node:10.0.0.7": 0.01}  # the ingress runs by its file

    assert path.parent == tmp_path / "state" / "ray"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.getuid()
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    ingress = settings_from_args(args, args[SECRETS_FILE])
    assert (ingress.api_keys, ingress.database_url) == ((API_KEY,), DATABASE_URL)
    replica = settings_from_args(args)
    assert (replica.api_keys, replica.database_url) == ((), None)
    # Deployed again with other secrets: the file is replaced whole, still for its owner only.
    again = write_secrets({"STEVEDORE_API_KEYS": "another"}, secrets_directory(settings))
    assert again == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings_from_args(args, args[SECRETS_FILE]).api_keys == ("another",)


def test_without_secrets_there_is_no_file_and_the_ingress_runs_anywhere() -> None:
    settings = Settings()
    assert settings.secret_env() == {}
    assert SECRETS_FILE not in application_args(settings)
    assert "resources" not in ingress_options(settings)["ray_actor_options"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        ("{not json", "is not JSON"),
        ('{"STEVEDORE_API_KEYS": ["s3cret-api-key"]}', "is not an object of STEVEDORE_\\* variables"),
        ('{"PATH": "/tmp"}', "is not an object of STEVEDORE_\\* variables"),
    ],
)
def test_a_secrets_file_that_cannot_be_read_is_a_startup_error_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "secrets.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StartupError, match=f"the secrets file {re.escape(str(path))}.*{message}") as raised:
        settings_from_args({"settings": {}}, str(path))
    assert API_KEY not in str(raised.value)  # what the file holds is never shown


def test_the_serve_config_deploys_the_builder_with_the_settings_and_spells_out_each_deployment(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "[models.batched]\nreplicas = 2", load_models=("batched",))

    class Other(Batched):
        name = "other"

    config = serve_config(settings, [Batched(), Other()], "127.0.0.1", 8000)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    (application,) = config["applications"]
    assert (application["name"], application["route_prefix"], application["import_path"]) == (
        "stevedore", "/", IMPORT_PATH,
    )  # fmt: skip
    assert Settings(**read_document(application["args"]["settings"], "test")).models == settings.models
    names = [deployment["name"] for deployment in application["deployments"]]
    assert names == [INGRESS, "batched:1"]  # other is not selected by load_models: no deployment
    assert application["deployments"][1]["num_replicas"] == 2


def test_config_only_writes_the_serve_config_of_the_installed_plugins_without_ray(tmp_path: Path) -> None:
    """The example plugin is installed in the test environment; Ray is not, and is not needed."""
    output = tmp_path / "serve.yaml"
    result = CliRunner().invoke(
        main,
        ["ray", "--config-only", "--plugins", "stevedore-sklearn-logreg", "--port", "8123", "--output", str(output)],
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(output.read_text())
    assert config["http_options"]["port"] == 8123
    assert [d["name"] for d in config["applications"][0]["deployments"]] == [INGRESS, "iris:1", "iris-proba:1"]
    to_stdout = CliRunner().invoke(
        main, ["ray", "--config-only", "--plugins", "stevedore-sklearn-logreg", "--port", "8123"]
    )
    assert yaml.safe_load(to_stdout.stdout) == config


def test_deploying_needs_an_address_and_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    no_address = CliRunner().invoke(main, ["ray"])
    assert no_address.exit_code == 2 and "--address" in no_address.output
    no_ray = CliRunner().invoke(main, ["ray", "--address", "127.0.0.1:6379"])
    assert no_ray.exit_code == 1 and "pip install 'stevedore-server[ray]'" in no_ray.output


def test_errors_cross_from_a_replica_to_the_ingress_whole() -> None:
    invalid = pickle.loads(pickle.dumps(InvalidPayload("no", [{"path": "/0", "message": "bad"}])))
    assert (type(invalid), invalid.message, invalid.details, invalid.status_code) == (
        InvalidPayload, "no", [{"path": "/0", "message": "bad"}], 422,
    )  # fmt: skip
    overloaded = pickle.loads(pickle.dumps(Overloaded("full")))
    assert overloaded.headers == {"Retry-After": "1"}
    failure = pickle.loads(pickle.dumps(ReportedFailure("model 'm' version '1' failed to predict", "abc")))
    assert (str(failure), failure.error_id) == ("model 'm' version '1' failed to predict", "abc")


class ReportingRuntime:
    """A runtime whose model failed in another process, as the Ray ingress's runtime reports it."""

    idle = True
    chooses_outputs = False
    statistics = ModelStatistics()

    async def call(self, action: str, payload: Any, rows: int | None) -> Any:
        raise ReportedFailure("model 'rowsum' version '1' failed to predict: ValueError", "0123abcd")

    async def call_outputs(self, payload: Any, rows: int | None, names: tuple[str, ...]) -> Any:
        return await self.call("predict", payload, rows)

    def close(self, unload_aside: bool = False) -> None:
        pass


def test_a_failure_reported_by_a_replica_is_a_500_with_the_replicas_error_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    registry = of_lifespan(client.app_state).server.registry
    registry.replace(dataclasses.replace(registry.get("rowsum"), runtime=ReportingRuntime()))
    for path, body in (("/models/rowsum/predict", [[1, 2]]), ("/v2/models/rowsum/infer", V2_ROWS)):
        answer = client.post(path, json=body)
        assert answer.status_code == 500
        assert answer.json()["error_id"] == "0123abcd"
        assert "see the server log for error id 0123abcd" in answer.json()["error"]
    assert "logged by the replica that ran the model" in caplog.text
