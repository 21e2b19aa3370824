"""``XGBoostRuntime``: an XGBoost model served from its file, answering as MLServer's XGBoost runtime does.

The file is read into XGBoost's scikit-learn interface as MLServer 1.7.1's ``mlserver_xgboost`` reads it: an
``XGBRegressor``, or an ``XGBClassifier`` where the file says it was saved by one. So ``predict`` answers what
the booster gives (a booster trained with ``multi:softprob`` answers probabilities), a classifier's ``predict``
its class labels, and its ``predict_proba`` the probabilities. JSON and UBJ run no code when read: no trust is
needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import Derived, FilePredictor, ModelFile, output_tensor, rows_schema

from . import files

#: MLServer's names of the outputs: every model has ``predict``, a classifier also ``predict_proba``.
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
INSTALL_HINT = (
    "xgboost is not installed: pip install 'stevedore-runtime-xgboost[cpu]' (or [gpu] for the wheel with CUDA)"
)


class XGBoostRuntime(FilePredictor):
    """An XGBoost model read from a JSON, UBJ (or ``.bst``, ``.model``) file, or the one such file of a folder
    (KServe's ``model.bst``); its answer is the output the settings choose (``predict`` by default), and over
    V2 any of its outputs by name."""

    # A damaged or crafted file can crash its native parser: read it in a child process first.
    read_aside_first = True

    patterns = files.PATTERNS
    # XGBoost predicts on float32: rows become one float32 array, V2 tensors too, with no lists made.
    numpy_input = True
    # Predicting a few rows is a short computation that never waits: the server measures it at startup.
    inline = True

    def __init__(self, spec: ModelFile) -> None:
        super().__init__(spec)
        self.methods: dict[str, Callable[[Any], Any]] = {}
        self.answer: Callable[[Any], Any] = self.not_loaded

    # -- which files ------------------------------------------------------------------

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        return files.recognizes(path)

    # -- loading ----------------------------------------------------------------------

    def open(self, path: Path) -> Any:
        xgboost = imported_xgboost()
        artifact = self.artifact_in(path)
        content = artifact.read_bytes()
        problem = files.bad_trees(content)
        if problem is not None:
            raise PluginError(f"{artifact} ({len(content)} bytes) is not a sound XGBoost model: {problem}")
        try:
            return read_estimator(xgboost, bytearray(content))
        except Exception as error:  # XGBoostError for a damaged file, TypeError for an estimator of another kind
            raise PluginError(
                f"{artifact} ({len(content)} bytes) cannot be read as an XGBoost model: "
                f"{type(error).__name__}: {first_line(error)}"
            ) from error

    def derive(self) -> Derived:
        booster = self.model.get_booster()
        width = int(booster.num_features())
        names = booster.feature_names
        self.methods = {PREDICT: self.model.predict}
        if hasattr(self.model, PREDICT_PROBA):
            self.methods[PREDICT_PROBA] = self.model.predict_proba
        default = self.default_output()
        self.answer = self.methods[default]
        fixture = [[0.0] * width]
        return Derived(
            predict_schema=rows_schema(width) | {"description": describe_features(width, names)},
            predict_fixture=fixture,
            tensor_outputs=[
                output_tensor(name, method(self.to_input(fixture))) for name, method in self.methods.items()
            ],
            default_outputs=[default],
            description=(
                f"XGBoost {type(self.model).__name__} from {self.spec.shown}: takes {describe_features(width, names)}; "
                f"answers {default} (V2 outputs: {', '.join(self.methods)})"
            ),
        )

    def default_output(self) -> str:
        return self.chosen_output(list(self.methods), PREDICT) or PREDICT

    # -- the hot path: one conversion, one bound method ---------------------------------

    def convert_prediction_input(self, payload: Any) -> Any:
        return self.to_input(payload)

    @staticmethod
    def to_input(payload: Any) -> Any:
        return np.asarray(payload, dtype=np.float32)

    def run_predict(self, X: Any) -> Any:
        return self.answer(X)

    def predict_outputs(self, payload: Any, names: tuple[str, ...]) -> dict[str, Any]:
        X = self.to_input(payload)
        return {name: self.methods[name](X) for name in names}

    def not_loaded(self, X: Any) -> Any:
        raise RuntimeError(f"model {self.name} is not loaded")


def imported_xgboost() -> Any:
    # Imported when a model is read, not with the runtime: telling whether a file is XGBoost's needs no XGBoost,
    # and a runtime installed without its [cpu] or [gpu] extra then fails its models with how to install it.
    try:
        import xgboost
    except ImportError as error:
        raise PluginError(INSTALL_HINT) from error
    return xgboost


def read_estimator(xgboost: Any, content: bytearray) -> Any:
    """The model as MLServer reads it: a regressor, else (XGBoost refuses a classifier's file) a classifier.

    From the bytes, not the path: XGBoost then tells JSON from UBJ by the content, whatever the file's name."""
    try:
        regressor = xgboost.XGBRegressor()
        regressor.load_model(content)
        return regressor
    except TypeError:  # "Loading an estimator with different type": saved by a classifier
        classifier = xgboost.XGBClassifier()
        classifier.load_model(content)
        return classifier


def first_line(error: Exception) -> str:
    """XGBoost's message without the native stack trace it appends."""
    return str(error).split("\nStack trace:")[0].strip()


def describe_features(width: int, names: list[str] | None) -> str:
    if names:
        return f"rows of {width} numbers: {', '.join(names)}"
    return f"rows of {width} numbers"
