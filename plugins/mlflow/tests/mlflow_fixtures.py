"""The MLflow runtime's test environment: a virtual environment of its own (MLflow and pandas pin versions that
may clash with the main one's), with the wheels of the core and of this runtime built here, MLflow from the
package index, and MLflow models saved in it by MLflow itself.

uv installs into it with its own cache (~/.cache/uv): MLflow comes from the index once, and every later build
takes seconds. The two wheels built here are refreshed in that cache each time (``--refresh-package``), so an
old build of the same name and version is never installed in their place.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.venvs import NETWORK_TIMEOUT, REPO, Venv, copy_source, offline_env, run_command

RUNTIME = REPO / "plugins" / "mlflow"
#: What the models need besides the runtime: scikit-learn (MLflow 3 saves it with skops) and cloudpickle.
REQUIREMENTS = ("mlflow-skinny>=2.9", "scikit-learn>=1.4", "skops>=0.10", "cloudpickle>=2")
LOCAL = ("stevedore-server", "stevedore-runtime-mlflow")

#: Run in the venv: saves the models with MLflow into argv[1], then writes the answers MLflow's own pyfunc
#: gives on ROWS (argv[2], JSON) to argv[1]/expected.json.
SAVE_MODELS = r"""
import json, sys
from pathlib import Path

import mlflow.pyfunc, mlflow.sklearn, numpy as np, pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

root, rows = Path(sys.argv[1]), np.asarray(json.loads(sys.argv[2]), dtype=np.float64)
X, y = load_iris(return_X_y=True)
columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
frame = pd.DataFrame(X, columns=columns)
requirements = ["scikit-learn"]  # saves MLflow the seconds it takes to infer them


class Weighted(mlflow.pyfunc.PythonModel):
    # A model of its own: a weighted sum of the columns.
    def predict(self, context, model_input, params=None):
        return model_input @ np.array([1.0, -2.0, 0.5, 3.0])


tensor_model = LogisticRegression(max_iter=1000).fit(X, y)
mlflow.sklearn.save_model(
    tensor_model, root / "tensor", serialization_format="cloudpickle", pip_requirements=requirements,
    signature=infer_signature(X, tensor_model.predict(X)), input_example=X[:3],
)
column_model = LogisticRegression(max_iter=1000).fit(frame, y)
mlflow.sklearn.save_model(
    column_model, root / "columns", pip_requirements=requirements,
    signature=infer_signature(frame, column_model.predict(frame)), input_example=frame.head(2),
)
mlflow.pyfunc.save_model(
    root / "python", python_model=Weighted(), pip_requirements=requirements,
    signature=infer_signature(frame, Weighted().predict(None, frame)),
)
mlflow.sklearn.save_model(tensor_model, root / "unsigned", serialization_format="pickle", pip_requirements=requirements)

given = pd.DataFrame(rows, columns=columns)
expected = {
    "tensor": mlflow.pyfunc.load_model(str(root / "tensor")).predict(rows).tolist(),
    "columns": mlflow.pyfunc.load_model(str(root / "columns")).predict(given).tolist(),
    "python": mlflow.pyfunc.load_model(str(root / "python")).predict(given).tolist(),
    "columns_example": frame.head(2).to_dict("list"),
    "tensor_example": X[:3].tolist(),
}
(root / "expected.json").write_text(json.dumps(expected))
"""


@dataclass(frozen=True)
class Models:
    """The MLflow models saved in the venv, and what MLflow's pyfunc answers on the tests' rows."""

    folder: Path
    expected: dict[str, Any]

    def __getitem__(self, name: str) -> Path:
        return self.folder / name


def make_mlflow_venv(root: Path) -> Venv:
    """A venv in ``root`` with the core's and the runtime's wheels (built here from the work tree), MLflow and
    scikit-learn; the core with its ``s3`` extra (s3fs), for models at ``s3://`` URIs."""
    wheels = root / "wheels"
    for source in (copy_source(REPO, root / "core"), copy_source(RUNTIME, root / "mlflow")):
        uv("build", "--quiet", "--wheel", "--out-dir", str(wheels), str(source))
    core = next(wheels.glob("stevedore_server-*.whl"))
    runtime = next(wheels.glob("stevedore_runtime_mlflow-*.whl"))
    environment = Venv.create(root / "venv", pip=False)
    refresh = [arg for name in LOCAL for arg in ("--refresh-package", name)]
    uv(
        "pip", "install", "--quiet", "--link-mode", "copy", "--python", str(environment.python), *refresh,
        f"stevedore-server[s3] @ {core.as_uri()}", f"stevedore-runtime-mlflow @ {runtime.as_uri()}", *REQUIREMENTS,
    )  # fmt: skip
    return environment


def uv(*args: str) -> None:
    """uv, from the environment running the tests, with its own cache and the package index."""
    run_command([sys.executable, "-m", "uv", *args], env=offline_env(), timeout=NETWORK_TIMEOUT)


def save_models(environment: Venv, folder: Path, rows: list[list[float]]) -> Models:
    folder.mkdir(parents=True, exist_ok=True)
    environment.run("python", "-c", SAVE_MODELS, str(folder), json.dumps(rows))
    return Models(folder, json.loads((folder / "expected.json").read_text()))
