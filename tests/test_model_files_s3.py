"""Model files at ``s3://`` URIs, from a real S3-compatible server (moto's server mode on loopback): served by the
scikit-learn, XGBoost, LightGBM and ONNX runtimes as the libraries answer, declared by ``--model`` and by a
settings file, pinned by hash, and after a restart from the cache with the S3 server gone (no network at all)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import lightgbm
import numpy as np
import onnxruntime
import pytest
import skops.io
import xgboost
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .s3 import Bucket, s3_bucket
from .venvs import Server, Venv

pytestmark = [pytest.mark.s3, pytest.mark.server]

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]


@dataclass
class Store:
    bucket: Bucket
    model: Any
    joblib_sha256: str
    #: What each library answers on ROWS, by the name the settings file serves its model under.
    expected: dict[str, list[Any]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The S3 server, holding an iris pipeline as a skops file, a joblib file and a KServe-style folder, and an
    XGBoost, a LightGBM and an ONNX model."""
    folder = tmp_path_factory.mktemp("s3-models")
    features, labels = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)
    skops.io.dump(model, folder / "model.skops")
    joblib.dump(model, folder / "model.joblib")
    digest = hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()
    expected = save_tree_and_onnx_models(folder, features, labels, model)
    with s3_bucket("models") as bucket:
        bucket.upload(folder / "model.skops", "iris/v1/model.skops")
        bucket.upload(folder / "model.joblib", "iris/v2/model.joblib")
        bucket.upload(folder / "model.skops", "kserve/iris/model.skops")
        for key in ("xgboost/model.json", "lightgbm/model.txt", "onnx/model.onnx"):
            bucket.upload(folder / key.replace("/", "-"), key)
        yield Store(bucket, model, digest, expected)


def save_tree_and_onnx_models(folder: Path, features: Any, labels: Any, pipeline: Any) -> dict[str, list[Any]]:
    """An XGBoost classifier, a LightGBM booster and the ONNX conversion of ``pipeline``, saved by their libraries
    (named as their S3 keys, ``/`` as ``-``); what each answers on ROWS."""
    rows = np.asarray(ROWS)
    classifier = xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(features, labels)
    classifier.save_model(folder / "xgboost-model.json")
    booster = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lightgbm.Dataset(features, labels), 5
    )
    booster.save_model(folder / "lightgbm-model.txt")
    onnx_model = to_onnx(pipeline, features[:1].astype(np.float32), options={"zipmap": False})
    (folder / "onnx-model.onnx").write_bytes(onnx_model.SerializeToString())
    session = onnxruntime.InferenceSession(folder / "onnx-model.onnx", providers=["CPUExecutionProvider"])
    (labels_out, *_) = session.run(["label"], {session.get_inputs()[0].name: rows.astype(np.float32)})
    return {
        "xgb": classifier.predict(rows.astype(np.float32)).tolist(),
        "lgb": booster.predict(rows).tolist(),
        "onnx": labels_out.tolist(),
    }


def serve(store: Store, directory: Path, name: str) -> Server:
    (directory / "stevedore.toml").write_text(
        f'[models.pinned]\nuri = "s3://models/iris/v2/model.joblib"\nsha256 = "{store.joblib_sha256}"\n'
        '[models.xgb]\nuri = "s3://models/xgboost/model.json"\n'
        '[models.lgb]\nuri = "s3://models/lightgbm/model.txt"\n'
        '[models.onnx]\nuri = "s3://models/onnx/model.onnx"\noutput = "label"\n'
    )
    options = (
        "--config", str(directory / "stevedore.toml"), "--state-dir", str(directory / "state"),
        "--model", "iris=s3://models/iris/v1/model.skops", "--model", "folder=sklearn:s3://models/kserve/iris/",
        "--plugins", "sklearn,xgboost,lightgbm,onnx",
    )  # fmt: skip
    server = Server.start(Venv(Path(sys.prefix), ()), directory / name, *options, **store.bucket.environment)
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
        for model, answer in store.expected.items():
            np.testing.assert_allclose(predictions(first, model), answer, rtol=1e-5)
        flat = np.ravel(ROWS).tolist()
        infer = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [3, 4], "data": flat}]}
        answer = httpx.post(first.url + "/v2/models/iris/infer", json=infer, timeout=30).json()
        assert np.ravel(answer["outputs"][0]["data"]).tolist() == expected
    finally:
        first.stop()
    store.bucket.server.stop()  # a restart with no S3 to reach: every model comes from the cache
    again = serve(store, tmp_path, "again.log")
    try:
        for model in ("iris", "folder", "pinned"):
            assert predictions(again, model) == expected
        for model, answer in store.expected.items():
            np.testing.assert_allclose(predictions(again, model), answer, rtol=1e-5)
    finally:
        again.stop()
    assert len(list((tmp_path / "state" / "model-cache").iterdir())) == 6
