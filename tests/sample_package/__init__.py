"""A package with data files, for resolving schema and fixture paths."""

from __future__ import annotations

from stevedore_server import Predictor


class FromPackageData(Predictor):
    name = "packaged"
    predict_schema = "data/predict.json"
    predict_fixture = "data/fixture.json"
    artifact = "data/fixture.json"

    def run_predict(self, rows: list[list[float]]) -> list[int]:
        return [len(row) for row in rows]
