"""API key scopes against a real server: each scope against each kind of route, over REST and gRPC.

The key file has a key of each scope and one line without scopes (every right, as files written before scopes
have). ``infer`` predicts and reads; ``train`` also starts jobs and cancels its own; ``admin`` also runs the
model repository."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.frontends.app import create_app

from .venvs import Server, Venv, ready_server

pytestmark = [pytest.mark.venv, pytest.mark.server]

KEYS = {"infer": "key-of-infer", "train": "key-of-train", "admin": "key-of-admin", "unscoped": "key-of-old-file"}
ROW = [[5.1, 3.5, 1.4, 0.2]]
MODEL = "/models/iris-trainer"
TENSOR = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW[0]}
REPOSITORY = "/v2/repository"


def key_file(path: Path) -> Path:
    lines = ["# digest, then scopes"]
    for scope, key in KEYS.items():
        digest = hashlib.sha256(key.encode()).hexdigest()
        lines.append(digest if scope == "unscoped" else f"{digest} {scope}  # {scope} only")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def server(trainer_venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("scopes")
    started = ready_server(
        trainer_venv,
        directory / "server.log",
        STEVEDORE_API_KEY_FILE=str(key_file(directory / "keys")),
        STEVEDORE_STATE_DIR=str(directory / "state"),
        STEVEDORE_PLUGINS="stevedore-test-trainer",
    )
    yield started
    started.stop()


def as_key(scope: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[scope]}"} if scope else {}


def call(server: Server, method: str, path: str, scope: str | None, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, server.url + path, headers=as_key(scope), timeout=60, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"{MODEL}/predict", ROW),
        ("GET", "/models", None),
        ("GET", MODEL, None),
        ("GET", f"{MODEL}/schemas/predict", None),
        ("POST", "/v2/models/iris-trainer/infer", {"inputs": [TENSOR]}),
        ("GET", "/v2/models/iris-trainer", None),
        ("GET", "/v2", None),
        ("GET", "/jobs", None),
        ("GET", "/list", None),
    ],
)
def test_every_scope_predicts_and_reads(server: Server, method: str, path: str, body: Any) -> None:
    for scope in KEYS:
        response = call(server, method, path, scope, json=body)
        assert response.status_code == 200, (scope, response.text)
    assert call(server, method, path, None, json=body).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", f"{MODEL}/train", {"C": 0.5}, 202),
        ("POST", f"{MODEL}/jobs/predict", ROW, 202),
        ("POST", "/v2/models/iris-trainer/train/", {"C": 0.5}, None),  # DEEPaaS's, where it answers
    ],
)
def test_starting_a_job_needs_the_train_scope(
    server: Server, method: str, path: str, body: Any, status: int | None
) -> None:
    refused = call(server, method, path, "infer", json=body)
    assert refused.status_code == 403, refused.text
    assert "train scope" in refused.json()["error"]
    for scope in ("train", "admin", "unscoped"):
        response = call(server, method, path, scope, json=body)
        assert response.status_code != 403, (scope, response.text)
        if status is not None:
            assert response.status_code == status, (scope, response.text)


def test_cancelling_a_job_needs_the_train_scope(server: Server) -> None:
    started = call(server, "POST", f"{MODEL}/train", "train", json={"C": 0.5})
    assert started.status_code == 202, started.text
    refused = call(server, "DELETE", f"/jobs/{started.json()['id']}", "infer")
    assert refused.status_code == 403, refused.text
    assert call(server, "DELETE", f"/jobs/{started.json()['id']}", "train").status_code in (200, 202, 409)


@pytest.mark.parametrize(
    "path",
    ["/v2/repository/index", "/v2/repository/models/iris-trainer/unload", "/v2/repository/models/iris-trainer/load"],
)
def test_the_repository_needs_the_admin_scope(server: Server, path: str) -> None:
    for scope in ("infer", "train"):
        refused = call(server, "POST", path, scope)
        assert refused.status_code == 403, (scope, refused.text)
        assert "admin scope" in refused.json()["error"]
    for scope in ("admin", "unscoped"):
        response = call(server, "POST", path, scope)
        assert response.status_code == 200, (scope, response.text)
    server.wait_for(f"{MODEL}/ready")


def test_probes_stay_open_and_other_methods_on_their_paths_do_not(server: Server) -> None:
    for path in ("/readyz", "/livez", "/v2/health/ready", f"{MODEL}/ready", "/v2/models/iris-trainer/ready"):
        assert call(server, "GET", path, None).status_code == 200, path
    # The open probe patterns are for GET: another method on the same path is checked as any route is.
    assert call(server, "POST", f"{MODEL}/ready", None).status_code == 401
    assert call(server, "DELETE", "/readyz", None).status_code == 401


def test_only_a_cors_preflight_skips_the_key(server: Server) -> None:
    """An OPTIONS without ``Access-Control-Request-Method`` is no preflight: it needs a key as any request."""
    assert call(server, "OPTIONS", f"{MODEL}/predict", None).status_code == 401
    preflight = httpx.options(
        server.url + f"{MODEL}/predict", headers={"Origin": server.url, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code != 401


def grpc_call(server: Server, name: str, request: Any, scope: str | None) -> grpc.StatusCode:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))
    metadata = [("authorization", f"Bearer {KEYS[scope]}")] if scope else []
    try:
        getattr(stub, name)(request, metadata=metadata, timeout=60)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def infer_request() -> Any:
    request = service_pb2.ModelInferRequest(model_name="iris-trainer")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend(ROW[0])
    return request


def test_grpc_scopes_match_the_rest_routes(server: Server) -> None:
    index = service_pb2.RepositoryIndexRequest()
    unload = service_pb2.RepositoryModelUnloadRequest(model_name="iris-trainer")
    metadata = service_pb2.ModelMetadataRequest(name="iris-trainer")
    for scope in KEYS:
        assert grpc_call(server, "ModelInfer", infer_request(), scope) == grpc.StatusCode.OK, scope
        assert grpc_call(server, "ModelMetadata", metadata, scope) == grpc.StatusCode.OK, scope
    for scope in ("infer", "train"):
        assert grpc_call(server, "RepositoryIndex", index, scope) == grpc.StatusCode.PERMISSION_DENIED, scope
        assert grpc_call(server, "RepositoryModelUnload", unload, scope) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call(server, "RepositoryIndex", index, "admin") == grpc.StatusCode.OK
    assert grpc_call(server, "RepositoryIndex", index, None) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_call(server, "ServerReady", service_pb2.ServerReadyRequest(), None) == grpc.StatusCode.OK


def test_an_unknown_scope_stops_startup_naming_the_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hashlib.sha256(b"k").hexdigest() + " infer,superuser\n")
    with pytest.raises(StartupError, match=r"line 1 of .*: unknown scope 'superuser'"):
        create_app(Settings(api_key_file=str(keys)))
