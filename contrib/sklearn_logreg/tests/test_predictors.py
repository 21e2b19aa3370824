"""The iris predictors against the real model file, schemas and fixtures: no mocks."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest
import skops.io
from stevedore_sklearn_logreg.predictor import TRUSTED_TYPES, LogReg, LogRegProba, predictors

from stevedore_server.base.serialization import dumps_result
from stevedore_server.base.validation import SchemaValidator
from stevedore_server.plugins.discovery import predictors_from
from stevedore_server.predictor import Predictor
from stevedore_server.testing import self_test

# The first row of each species in sklearn's iris data, with its species.
KNOWN_ROWS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
KNOWN_CLASSES = [0, 1, 2]


def loaded(predictor: Predictor) -> Predictor:
    predictor.load()
    return predictor


@pytest.fixture(scope="module")
def labels() -> Predictor:
    return loaded(LogReg())


@pytest.fixture(scope="module")
def probabilities() -> Predictor:
    return loaded(LogRegProba())


@pytest.mark.parametrize("predictor", predictors(), ids=lambda predictor: predictor.name)
def test_the_server_would_serve_it(predictor: Predictor) -> None:
    entry = self_test(predictor)
    assert entry.ready
    assert entry.predictor.has_score and entry.score_validator is not None


def test_known_rows_get_their_species(labels: Predictor) -> None:
    assert labels.predict(KNOWN_ROWS).tolist() == KNOWN_CLASSES


def test_predictions_are_written_as_json_integers(labels: Predictor) -> None:
    # The output is the model's integer array, which the server writes as it writes every response.
    assert dumps_result(labels.predict(KNOWN_ROWS)) == b"[0,1,2]"


def test_probabilities_sum_to_one(probabilities: Predictor) -> None:
    rows = probabilities.predict(KNOWN_ROWS)
    assert rows.shape == (3, 3)
    assert rows.sum(axis=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert ((rows >= 0.0) & (rows <= 1.0)).all()


def test_most_likely_class_is_the_label(probabilities: Predictor, labels: Predictor) -> None:
    assert probabilities.predict(KNOWN_ROWS).argmax(axis=1).tolist() == labels.predict(KNOWN_ROWS).tolist()


@pytest.mark.parametrize("predictor", predictors(), ids=lambda predictor: predictor.name)
def test_score_on_the_fixture_is_high(predictor: Predictor) -> None:
    fixture = predictor.resolved_fixture("score")
    assert len(fixture) == 30
    assert loaded(predictor).score(fixture) > 0.9


def test_the_entry_point_gives_both_models() -> None:
    (entry_point,) = [ep for ep in entry_points(group="stevedore.predictors") if ep.name == "iris"]
    served = predictors_from(entry_point.load())
    names = [predictor.name for predictor in served]
    assert sorted(names) == ["iris", "iris-proba"]
    assert all(predictor.description for predictor in served)


def test_the_model_file_needs_only_the_trusted_types() -> None:
    model_path = LogReg().resource_path(LogReg.artifact)
    assert sorted(skops.io.get_untrusted_types(file=model_path)) == sorted(TRUSTED_TYPES)


def validator(kind: str) -> SchemaValidator:
    schema = LogReg().resolved_schema(kind)
    assert schema is not None
    return SchemaValidator(schema)


@pytest.mark.parametrize(
    "payload",
    [[[5.1, 3.5, 1.4]], "5.1, 3.5, 1.4, 0.2", [["5.1", 3.5, 1.4, 0.2]], [], [[5.1, 3.5, 1.4, 0.2, 1.0]]],
    ids=["three numbers", "a string", "a string in a row", "no rows", "five numbers"],
)
def test_predict_schema_rejects(payload: Any) -> None:
    assert not validator("predict").is_valid(payload)


@pytest.mark.parametrize(
    "payload",
    [
        [{"x": [5.1, 3.5, 1.4], "y": 0}],
        "5.1, 3.5, 1.4, 0.2",
        [{"x": [5.1, 3.5, 1.4, 0.2], "y": 3}],
        [{"x": [5.1, 3.5, 1.4, 0.2]}],
        [{"x": [5.1, 3.5, 1.4, 0.2], "y": 0, "weight": 1}],
    ],
    ids=["three numbers", "a string", "unknown class", "no label", "extra field"],
)
def test_score_schema_rejects(payload: Any) -> None:
    assert not validator("score").is_valid(payload)


def test_schemas_accept_the_documented_example() -> None:
    assert validator("predict").is_valid([[5.1, 3.5, 1.4, 0.2]])
    assert validator("score").is_valid([{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}])
