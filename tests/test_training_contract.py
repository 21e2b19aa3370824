"""The training contract: ``train_schema`` and ``train_fixture`` are checked at load, as the other schemas are."""

from __future__ import annotations

from typing import Any

from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.loading import State, load_model
from stevedore_server.predictor import Predictor


class Trainable(Predictor):
    name = "trainable"
    predict_schema = {"type": "array"}
    predict_fixture = [1]
    train_schema = {"type": "object", "properties": {"epochs": {"type": "integer", "minimum": 1}}}
    train_fixture = {"epochs": 2}

    def run_predict(self, rows: Any) -> Any:
        return rows


def source() -> PluginSource:
    return PluginSource(entry_point="tests")


def test_a_train_schema_compiles_and_its_fixture_is_checked_not_run() -> None:
    loaded = load_model(Trainable(), source())
    assert loaded.state is State.READY and loaded.predictor.has_train
    assert loaded.train_validator is not None and loaded.train_validator.is_valid({"epochs": 3})


def test_a_train_fixture_not_matching_its_schema_fails_the_model() -> None:
    loaded = load_model(Trainable(train_fixture={"epochs": 0}), source())
    assert loaded.state is State.FAILED
    assert "train_fixture does not match train_schema" in (loaded.reason or "")


def test_a_model_without_a_train_schema_has_no_train_service() -> None:
    loaded = load_model(Trainable(train_schema=None), source())
    assert loaded.ready and not loaded.predictor.has_train and loaded.train_validator is None
