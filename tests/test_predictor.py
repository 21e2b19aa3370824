"""The Predictor contract: declarations, the seed example, the original constructor."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from stevedore_server import Predictor
from stevedore_server.base.errors import PluginError
from stevedore_server.plugins.loading import State
from stevedore_server.testing import SelfTestFailed, self_test

from .predictors import ROWS, RowSum
from .sample_package import FromPackageData

IRIS_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
IRIS_PREDICT = {"type": "array", "minItems": 1, "items": IRIS_ROW}
IRIS_SCORE = {
    "type": "array",
    "items": {"type": "object", "required": ["x", "y"], "properties": {"x": IRIS_ROW, "y": {"type": "integer"}}},
}


class LogReg(Predictor):
    """The seed example, as written (NumPy 2 spelling)."""

    def convert_prediction_input(self, x):  # type: ignore[no-untyped-def]
        return np.asarray(x, dtype=float)

    def convert_score_input(self, in_object):  # type: ignore[no-untyped-def]
        X = [item["x"] for item in in_object]
        y = [item["y"] for item in in_object]
        return np.asarray(X, dtype=float), np.array(y)

    def run_scores(self, X, y):  # type: ignore[no-untyped-def]
        return self.model.score(X, y)

    def run_predict(self, X):  # type: ignore[no-untyped-def]
        return self.model.predict(X)

    def convert_output(self, res):  # type: ignore[no-untyped-def]
        return res.tolist()


@pytest.fixture(scope="module")
def iris_model() -> Any:
    data = load_iris()
    return LogisticRegression(max_iter=500).fit(data.data, data.target)


def test_the_original_constructor_still_works(iris_model: Any) -> None:
    test_input = [[5.1, 3.5, 1.4, 0.2]]
    score_input = [{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}, {"x": [6.7, 3.0, 5.2, 2.3], "y": 2}]
    predictor = LogReg(iris_model, "logreg", test_input, IRIS_PREDICT, score_input, IRIS_SCORE)
    assert (predictor.name, predictor.version) == ("logreg", "v1")
    assert predictor.predict_fixture == test_input and predictor.score_schema == IRIS_SCORE
    entry = self_test(predictor)
    assert entry.state is State.READY
    assert predictor.predict(test_input) == [0]
    assert predictor.score(score_input) == 1.0
    assert LogReg(iris_model, "logreg", test_input, IRIS_PREDICT, score_input, IRIS_SCORE, version="v7").version == "v7"


def test_class_attributes_with_per_instance_overrides() -> None:
    predictor = RowSum(version="2", description="other")
    assert (predictor.name, predictor.version, predictor.description) == ("rowsum", "2", "other")
    assert RowSum().version == "1"
    with pytest.raises(TypeError, match="unknown attributes: colour"):
        RowSum(colour="red")


def test_defaults() -> None:
    class Minimal(Predictor):
        name = "minimal"
        predict_schema = ROWS
        predict_fixture = [[1]]

        def run_predict(self, rows: Any) -> Any:
            return rows

    predictor = Minimal()
    assert predictor.version == "1" and not predictor.has_score
    assert predictor.predict([[2]]) == [[2]]  # identity conversions
    assert self_test(predictor).created is not None
    with pytest.raises(NotImplementedError, match="convert_score_input"):
        predictor.score([])


def test_schemas_and_fixtures_from_package_data() -> None:
    predictor = FromPackageData()
    rows = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    assert predictor.resolved_schema("predict") == rows
    assert predictor.resolved_fixture("predict") == [[1, 2, 3]]
    assert predictor.resource_path("data/fixture.json").is_file()
    entry = self_test(predictor)
    assert entry.predictor.predict([[1, 2]]) == [2]


def test_created_is_the_artifacts_modification_time() -> None:
    predictor = FromPackageData()
    os.utime(predictor.resource_path("data/fixture.json"), (1_700_000_000, 1_700_000_000))
    assert self_test(predictor).created == "2023-11-14T22:13:20Z"


def test_created_when_declared_is_normalised_to_utc() -> None:
    assert self_test(RowSum(created="2024-05-01T12:00:00+02:00")).created == "2024-05-01T10:00:00Z"
    with pytest.raises(SelfTestFailed, match="not an ISO 8601 time"):
        self_test(RowSum(created="yesterday"))


def test_bad_package_data_is_the_plugins_error() -> None:
    with pytest.raises(PluginError, match="not valid JSON"):
        FromPackageData(predict_schema="data/broken.json").resolved_schema("predict")
    with pytest.raises(PluginError, match="not found"):
        FromPackageData(predict_fixture="data/missing.json").resolved_fixture("predict")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"predict_schema": None}, "predict_schema is required"),
        ({"predict_fixture": None}, "predict_fixture is required"),
        ({"predict_schema": {"type": 12}}, "not a valid JSON Schema"),
        ({"score_fixture": [{"x": [1]}]}, "score_fixture does not match score_schema"),
    ],
)
def test_what_stops_a_model_being_served(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(SelfTestFailed, match=reason):
        self_test(RowSum(**overrides))


def test_a_fixture_string_not_ending_in_json_is_a_value() -> None:
    predictor = RowSum(predict_fixture="hello")
    assert predictor.resolved_fixture("predict") == "hello"
