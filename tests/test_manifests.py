"""``stevedore-server manifests``: every resource valid against the published schemas, strictly (an unknown field
is an error): Kubernetes' own for the core resources (kubernetes-validate bundles them), KServe's API types for
its resources (from KServe's SDK, in an environment of their own); by default and hardened (the API keys from a
Secret, the state directory on a claim, the NetworkPolicy's namespaces chosen), and the hardened container's
settings served by a real server: its probes answer without a key, its models need one."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

import stevedore_server
from stevedore_server.cli import main
from stevedore_server.deploy.manifests import GRPC_PORT, HTTP_PORT, Deployment, render

from .venvs import Server, Venv

#: The Kubernetes release whose schemas the core resources are checked against.
KUBERNETES = "1.33"
#: KServe's release whose API types its resources are checked against, and what its SDK's types need.
KSERVE_TYPES = [
    "kserve==0.21.0", "kubernetes>=33", "pydantic>=2", "pydantic-core", "typing-extensions", "annotated-types",
    "typing-inspection", "six", "python-dateutil", "urllib3", "certifi", "pyyaml",
]  # fmt: skip
CHECKER = Path(__file__).parent / "kserve" / "check_manifests.py"
#: The image's state directory, as its Containerfile sets it: where the manifests must put a writable volume.
CONTAINERFILE = Path(stevedore_server.__file__).parent / "deploy" / "container" / "Containerfile"
STATE_DIR = re.search(r"STEVEDORE_STATE_DIR=(\S+)", CONTAINERFILE.read_text())[1]  # type: ignore[index]
CORE = [
    "deployment.yaml", "service.yaml", "horizontalpodautoscaler.yaml", "poddisruptionbudget.yaml",
    "networkpolicy.yaml",
]  # fmt: skip
KSERVE = [
    "clusterservingruntime.yaml", "inferenceservice.yaml", "clusterservingruntime-files.yaml",
    "inferenceservice-files.yaml",
]  # fmt: skip
#: The options of a hardened deployment: keys from a Secret, the state on a claim, the namespaces let in.
HARDENED = [
    "--api-key-secret", "model-keys", "--state-claim", "model-state",
    "--ingress-namespace", "traefik", "--ingress-namespace", "clients", "--metrics-namespace", "prometheus",
    "--allow-pickle", "--model-format", "xgboost", "--storage-uri", "gs://models/booster",
]  # fmt: skip


def write_manifests(directory: Path, *options: str) -> Path:
    args = ["manifests", "--image", "registry.example/models:1", "--output", str(directory), *options]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture(params=["default", "hardened"])
def written(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The manifests as written by default, and with every hardening option."""
    return write_manifests(tmp_path, *(HARDENED if request.param == "hardened" else []))


def load(directory: Path, file: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((directory / file).read_text())
    return loaded


def server_of(resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec of a Deployment or a ClusterServingRuntime, and its server container."""
    spec = resource["spec"]
    pod = spec["template"]["spec"] if resource["kind"] == "Deployment" else spec
    (container,) = pod["containers"]
    return pod, container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {variable["name"]: variable["value"] for variable in container["env"]}


def mounted(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each mount path of the container: its mount and the pod's volume."""
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    return {mount["mountPath"]: (mount, volumes[mount["name"]]) for mount in container["volumeMounts"]}


def test_one_resource_a_file_for_the_models_installed(written: Path) -> None:
    assert sorted(path.name for path in written.iterdir()) == sorted(CORE + KSERVE)
    runtime = yaml.safe_load((written / "clusterservingruntime.yaml").read_text())
    formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert formats == ["stevedore", "iris", "iris-proba"]  # any of ours, then each model installed here
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    (server,) = runtime["spec"]["containers"]
    assert server["name"] == "kserve-container" and server["image"] == "registry.example/models:1"
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": HTTP_PORT}
    assert server["securityContext"]["runAsNonRoot"] and server["securityContext"]["readOnlyRootFilesystem"]


@pytest.mark.parametrize("file", ["deployment.yaml", "clusterservingruntime.yaml", "clusterservingruntime-files.yaml"])
def test_the_api_key_secret_is_the_key_file_and_the_probes_need_no_key(tmp_path: Path, file: str) -> None:
    pod, server = server_of(load(write_manifests(tmp_path, *HARDENED), file))
    key_file = Path(env_of(server)["STEVEDORE_API_KEY_FILE"])
    mount, volume = mounted(pod, server)[str(key_file.parent)]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "model-keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": key_file.name}]
    assert volume["secret"]["defaultMode"] == 0o440  # the pod's group (fsGroup: the server's) reads it, no other
    # Keyless probes: the server answers them while --auth-health is off, which nothing here turns on.
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "httpHeaders" not in server[probe]["httpGet"]
    assert not any("auth" in arg for arg in server["args"]) and "STEVEDORE_AUTH_HEALTH" not in env_of(server)


def test_the_pods_that_mount_the_key_file_run_in_the_servers_group(tmp_path: Path) -> None:
    """A Secret's file of mode 0440 is root's unless the pod's ``fsGroup`` is the server's: without it the server
    (user and group 10001) cannot read its keys and never starts. KServe takes it on the InferenceService."""
    directory = write_manifests(tmp_path, *HARDENED)
    deployment = load(directory, "deployment.yaml")
    inference = load(directory, "inferenceservice.yaml")
    group = deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert inference["spec"]["predictor"]["securityContext"]["fsGroup"] == group
    _, server = server_of(deployment)
    assert server["securityContext"]["runAsGroup"] == group


@pytest.mark.parametrize("file", ["deployment.yaml", "clusterservingruntime.yaml", "clusterservingruntime-files.yaml"])
def test_the_state_directory_is_a_volume_of_its_own(tmp_path: Path, file: str) -> None:
    """On the read-only root file system, jobs need a writable state directory: an emptyDir, or the claim."""
    for directory, options, expected in (
        (tmp_path / "default", [], {"emptyDir": {"sizeLimit": "1Gi"}}),
        (tmp_path / "claimed", HARDENED, {"persistentVolumeClaim": {"claimName": "model-state"}}),
    ):
        pod, server = server_of(load(write_manifests(directory, *options), file))
        assert env_of(server)["STEVEDORE_STATE_DIR"] == STATE_DIR
        mount, volume = mounted(pod, server)[STATE_DIR]
        assert "readOnly" not in mount
        assert {key: value for key, value in volume.items() if key != "name"} == expected


def test_the_network_policy_lets_in_the_ingress_and_metrics_namespaces_only(tmp_path: Path) -> None:
    def allowed(directory: Path) -> dict[tuple[str, ...], list[int]]:
        policy = load(directory, "networkpolicy.yaml")
        pods = load(directory, "deployment.yaml")["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"] == {"matchLabels": pods}
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rules = {}
        for rule in policy["spec"]["ingress"]:
            selectors = [source["namespaceSelector"] for source in rule["from"]]
            names = tuple(selector["matchLabels"]["kubernetes.io/metadata.name"] for selector in selectors)
            assert all(selector == {"matchLabels": {"kubernetes.io/metadata.name": name}}
                       for selector, name in zip(selectors, names, strict=True))  # fmt: skip
            assert {port["protocol"] for port in rule["ports"]} == {"TCP"}
            rules[names] = [port["port"] for port in rule["ports"]]
        return rules

    default = allowed(write_manifests(tmp_path / "default"))
    assert default == {("ingress-nginx",): [HTTP_PORT, GRPC_PORT], ("monitoring",): [HTTP_PORT]}
    hardened = allowed(write_manifests(tmp_path / "hardened", *HARDENED, "--http-port", "9000"))
    assert hardened == {("traefik", "clients"): [9000, GRPC_PORT], ("prometheus",): [9000]}


def test_no_namespace_lets_in_no_one_rather_than_everyone() -> None:
    """A rule without sources would admit every pod: with no namespace named there is no rule."""
    policy = render(Deployment("image", ["iris"], ingress_namespaces=(), metrics_namespaces=()))["networkpolicy.yaml"]
    assert policy["spec"]["ingress"] == []
    kubernetes_validate.validate(policy, KUBERNETES, strict=True)


@pytest.mark.server
def test_the_hardened_containers_settings_serve_probes_without_a_key_and_models_with_one(tmp_path: Path) -> None:
    """The hardened Deployment's container settings, given to a real server (its key file and state directory
    where the Secret and the volume would be): the probes' paths answer without a key, a model needs one."""
    _, server = server_of(load(write_manifests(tmp_path / "manifests", *HARDENED), "deployment.yaml"))
    key = "the-key-of-a-client"
    key_file = tmp_path / "secret" / "api-keys"
    key_file.parent.mkdir()
    key_file.write_text(hashlib.sha256(key.encode()).hexdigest() + "\n")
    where = {str(Path(env_of(server)["STEVEDORE_API_KEY_FILE"])): str(key_file), STATE_DIR: str(tmp_path / "state")}
    env = {name: where.get(value, value) for name, value in env_of(server).items() if name.startswith("STEVEDORE_")}
    assert set(env) == {"STEVEDORE_API_KEY_FILE", "STEVEDORE_STATE_DIR"}
    running = Server.start(Venv(Path(sys.prefix), ()), tmp_path / "server.log", "--plugins", "stevedore-sklearn-logreg",
                           **env)  # fmt: skip
    try:
        running.wait_for("/readyz")
        probes = {server[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
        for path in probes:
            assert httpx.get(running.url + path, timeout=10).status_code == 200, path
        assert httpx.get(running.url + "/models", timeout=10).status_code == 401
        with_key = httpx.get(running.url + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert with_key.status_code == 200, with_key.text
    finally:
        running.stop()


@pytest.mark.parametrize("file", CORE)
def test_core_resources_are_valid_kubernetes(written: Path, file: str) -> None:
    kubernetes_validate.validate(yaml.safe_load((written / file).read_text()), KUBERNETES, strict=True)


def test_the_deployment_drains_within_its_grace_period() -> None:
    resources = render(Deployment("image", ["iris"]))
    pod = resources["deployment.yaml"]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    delay = int(args[args.index("--shutdown-delay") + 1])
    graceful = int(args[args.index("--graceful-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > delay + graceful
    assert {p["containerPort"] for p in pod["containers"][0]["ports"]} == {HTTP_PORT, GRPC_PORT}


def test_the_checks_refuse_an_unknown_field(written: Path) -> None:
    deployment = yaml.safe_load((written / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError, match="bogus"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    policy = yaml.safe_load((written / "networkpolicy.yaml").read_text())
    policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabel"] = {}  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError, match="matchLabel"):
        kubernetes_validate.validate(policy, KUBERNETES, strict=True)


@pytest.fixture(scope="session")
def kserve_types(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with KServe's SDK and the Kubernetes client, without their other dependencies."""
    environment = Venv.create(tmp_path_factory.mktemp("kserve-types") / "venv", pip=False)
    environment.install_from_index("--no-deps", *KSERVE_TYPES)
    yield environment.python


def check_kserve(python: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), str(CHECKER), *map(str, files)], capture_output=True, text=True, timeout=120)


@pytest.mark.venv
def test_kserve_resources_match_kserves_api_types(written: Path, kserve_types: Path, tmp_path: Path) -> None:
    result = check_kserve(kserve_types, *(written / file for file in KSERVE))
    assert result.returncode == 0, result.stdout + result.stderr
    broken = yaml.safe_load((written / "inferenceservice.yaml").read_text())
    broken["spec"]["predictor"]["model"]["storageURI"] = "s3://misspelt"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = check_kserve(kserve_types, tmp_path / "broken.yaml")
    assert result.returncode == 1 and "storageURI: unknown field" in result.stdout, result.stdout + result.stderr
