"""Model files at ``s3://`` URIs, from a real S3-compatible server (moto's server mode on loopback): served by the
scikit-learn runtime as the estimator answers, pinned by hash, and after a restart from the cache with the S3
server gone (no network at all)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import joblib
import numpy as np
import pytest
import skops.io
from moto.server import ThreadedMotoServer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stevedore_server.kit.loopback import free_ports

from .venvs import Server, Venv

pytestmark = [pytest.mark.s3, pytest.mark.server]

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]


@dataclass
class Store:
    endpoint: str
    server: ThreadedMotoServer
    model: Any
    joblib_sha256: str

    @property
    def environment(self) -> dict[str, str]:
        """What a pod is given to reach its store (dummy credentials: moto takes any)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The S3 server, holding an iris pipeline as a skops file, a joblib file and a KServe-style folder."""
    folder = tmp_path_factory.mktemp("s3-models")
    features, labels = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    skops.io.dump(model, folder / "model.skops")
    joblib.dump(model, folder / "model.joblib")
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket="models")
    client.upload_file(str(folder / "model.skops"), "models", "iris/v1/model.skops")
    client.upload_file(str(folder / "model.joblib"), "models", "iris/v2/model.joblib")
    client.upload_file(str(folder / "model.skops"), "models", "kserve/iris/model.skops")
    digest = hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()
    try:
        yield Store(endpoint, server, model, digest)
    finally:
        server.stop()


def serve(store: Store, directory: Path, name: str) -> Server:
    (directory / "stevedore.toml").write_text(
        f'[models.pinned]\nuri = "s3://models/iris/v2/model.joblib"\nsha256 = "{store.joblib_sha256}"\n'
    )
    options = (
        "--config", str(directory / "stevedore.toml"), "--state-dir", str(directory / "state"),
        "--model", "iris=s3://models/iris/v1/model.skops", "--model", "folder=sklearn:s3://models/kserve/iris/",
        "--plugins", "sklearn",
    )  # fmt: skip
    server = Server.start(Venv(Path(sys.prefix), ()), directory / name, *options, **store.environment)
    try:
        server.wait_for("/readyz", deadline=120)
    except BaseException:
        server.stop()
        raise
    return server


def predictions(server: Server, model: str) -> list[Any]:
    answer = httpx.post(f"{server.url}/models/{model}/predict", json=ROWS, timeout=30)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])


def test_s3_model_files_serve_as_the_estimator_answers_and_then_from_the_cache_with_s3_gone(
    store: Store, tmp_path: Path
) -> None:
    expected = store.model.predict(np.asarray(ROWS)).tolist()
    first = serve(store, tmp_path, "first.log")
    try:
        for model in ("iris", "folder", "pinned"):
            assert predictions(first, model) == expected
        flat = np.ravel(ROWS).tolist()
        infer = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": flat}]}
        answer = httpx.post(first.url + "/v2/models/iris/infer", json=infer, timeout=30).json()
        assert np.ravel(answer["outputs"][0]["data"]).tolist() == expected
    finally:
        first.stop()
    store.server.stop()  # a restart with no S3 to reach: every model comes from the cache
    again = serve(store, tmp_path, "again.log")
    try:
        for model in ("iris", "folder", "pinned"):
            assert predictions(again, model) == expected
    finally:
        again.stop()
    assert len(list((tmp_path / "state" / "model-cache").iterdir())) == 3
