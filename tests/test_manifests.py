"""``stevedore-server manifests``: every resource valid against the published schemas, strictly (an unknown field
is an error): Kubernetes' own for the core resources (kubernetes-validate bundles them), KServe's API types for
its resources (from KServe's SDK, in an environment of their own)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from stevedore_server.cli import main
from stevedore_server.deploy.manifests import GRPC_PORT, HTTP_PORT, Deployment, render

from .venvs import Venv

#: The Kubernetes release whose schemas the core resources are checked against.
KUBERNETES = "1.33"
#: KServe's release whose API types its resources are checked against, and what its SDK's types need.
KSERVE_TYPES = [
    "kserve==0.21.0", "kubernetes>=33", "pydantic>=2", "pydantic-core", "typing-extensions", "annotated-types",
    "typing-inspection", "six", "python-dateutil", "urllib3", "certifi", "pyyaml",
]  # fmt: skip
CHECKER = Path(__file__).parent / "kserve" / "check_manifests.py"
CORE = ["deployment.yaml", "service.yaml", "horizontalpodautoscaler.yaml", "poddisruptionbudget.yaml"]
KSERVE = ["clusterservingruntime.yaml", "inferenceservice.yaml"]


@pytest.fixture
def written(tmp_path: Path) -> Path:
    result = CliRunner().invoke(main, ["manifests", "--image", "registry.example/models:1", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path


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
