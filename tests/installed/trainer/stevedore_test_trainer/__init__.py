"""A model trained on scikit-learn's iris data set, and one whose training raises, hangs or dies as asked."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from stevedore_server import Predictor

ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}}


class IrisTrainer(Predictor):
    name = "iris-trainer"
    predict_schema = ROWS
    predict_fixture = [[5.1, 3.5, 1.4, 0.2]]
    train_schema = {
        "type": "object",
        "properties": {
            "C": {"type": "number", "exclusiveMinimum": 0},
            "max_iter": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
        "additionalProperties": False,
    }
    train_fixture = {"C": 1.0}

    def load(self) -> None:
        if self.artifact:  # a version a training made
            self.model = pickle.loads(Path(self.artifact).read_bytes())
            return
        features, labels = load_iris(return_X_y=True)
        self.model = LogisticRegression(max_iter=1000).fit(features, labels)

    def run_predict(self, rows: Any) -> list[int]:
        return [int(label) for label in self.model.predict(rows)]

    def train(self, params: dict[str, Any], context: Any) -> dict[str, Any]:
        context.logger.info("training under %s", sys.executable)
        context.logger.info("loading the iris data set")
        features, labels = load_iris(return_X_y=True)
        context.progress(0.2, "data loaded")
        model = LogisticRegression(C=params.get("C", 1.0), max_iter=params.get("max_iter", 1000))
        model.fit(features, labels)
        context.progress(0.9, "fitted")
        artifact = context.workdir / "model.pickle"
        artifact.write_bytes(pickle.dumps(model))
        accuracy = float(model.score(features, labels))
        context.logger.info("training accuracy %.3f", accuracy)
        return {"accuracy": accuracy, "artifact": str(artifact)}


class Unpicklable(Exception):
    """An exception holding a lock: pickling it fails."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


MODES = ["raise", "unpicklable", "hang", "stubborn", "abort", "not-json", "log", "escape", "busy"]


class MisbehavingTrainer(Predictor):
    name = "misbehaving-trainer"
    predict_schema = ROWS
    predict_fixture = [[1, 2, 3, 4]]
    train_schema = {
        "type": "object",
        "properties": {"mode": {"enum": MODES}},
        "required": ["mode"],
    }
    train_fixture = {"mode": "raise"}

    def run_predict(self, rows: Any) -> list[int]:
        return [0 for _ in rows]

    def train(self, params: dict[str, Any], context: Any) -> Any:
        mode = params["mode"]
        context.logger.info("misbehaving: %s", mode)
        if mode == "raise":
            raise ValueError("the data is bad")
        if mode == "unpicklable":
            raise Unpicklable()
        if mode == "abort":
            os.abort()
        if mode == "not-json":
            return {"model": object()}
        if mode == "escape":  # an artifact outside the job's workdir is never served
            return {"artifact": "../../../../etc/passwd"}
        if mode == "log":
            for number in range(2000):
                context.logger.info("line %d", number)
            return {"lines": 2000}
        if mode == "busy":  # a CPU-bound training, until cancelled
            context.progress(0.5, "hanging")
            while not context.cancelled():
                sum(number * number for number in range(10000))
            return {"stopped": True}
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
        context.progress(0.5, "hanging")
        while mode == "stubborn" or not context.cancelled():
            time.sleep(0.05)
        context.logger.info("cancelled, stopping")
        return {"stopped": True}
