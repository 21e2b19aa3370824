"""A model that trains in a blink, for the tests of trained versions against a real server (imported by the
server through a recorded distribution: ``helpers.record_distribution``).

Its artifact is a pickle, loaded with ``pickle``, as a model's often is: a test can hand it a pickle whose loading
leaves a mark (``Marked``), to tell whether the server ever unpickled a file."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from stevedore_server import Predictor

ROWS = {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "number"}, "minItems": 1}}


class OffsetTrainer(Predictor):
    """Sums each row, plus the ``offset`` its training was given (0 for the installed version)."""

    name = "offset-trainer"
    predict_schema = ROWS
    predict_fixture = [[1, 2]]
    train_schema = {
        "type": "object",
        "properties": {"offset": {"type": "number"}},
        "additionalProperties": False,
    }
    train_fixture = {"offset": 1}

    def load(self) -> None:
        self.offset = pickle.loads(Path(self.artifact).read_bytes())["offset"] if self.artifact else 0

    def run_predict(self, rows: list[list[float]]) -> list[float]:
        return [sum(row) + self.offset for row in rows]

    def train(self, params: dict[str, Any], context: Any) -> dict[str, Any]:
        artifact = context.workdir / "model.pickle"
        artifact.write_bytes(pickle.dumps({"offset": params.get("offset", 0)}))
        return {"artifact": str(artifact)}


def mark(path: str, offset: float) -> dict[str, float]:
    """What unpickling a ``Marked`` calls: the mark, then a model's parameters."""
    Path(path).touch()
    return {"offset": offset}


class Marked:
    """Pickles to a call of ``mark``: whoever unpickles it creates the file ``path``."""

    def __init__(self, path: Path, offset: float = 0) -> None:
        self.path, self.offset = path, offset

    def __reduce__(self) -> tuple[Any, ...]:
        return mark, (str(self.path), self.offset)
