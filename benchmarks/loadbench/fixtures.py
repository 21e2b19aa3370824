"""The one model every target serves, the rows sent and the predictions expected back."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from .client import send
from .payloads import Payload, Rows, UnreadableAnswer
from .settings import BENCH_DIR, REPO_DIR

PLUGIN_MODEL = REPO_DIR / "contrib" / "sklearn_logreg" / "stevedore_sklearn_logreg" / "model.skops"
EXPORT_SCRIPT = BENCH_DIR / "servers" / "export_model.py"
#: Our adaptive batching for the batching scenario, as a stevedore-server settings file.
BATCHING_CONFIG = """\
# Written by the benchmark for its batching scenario.
[models.iris]
max_batch_size = 32
max_batch_time = 0.002
"""


class FixtureError(Exception):
    """The model could not be exported."""


class WrongAnswer(Exception):
    """A target that does not answer, or answers other than the model itself."""


@dataclass(frozen=True)
class Fixtures:
    model: Path
    #: rows.json: {"small": [1 row], "batch": [1000 rows]}
    rows_file: Path
    rows: dict[str, Rows]
    #: size -> precision ("FP64" or "FP32") -> the model's own predictions
    expected: dict[str, dict[str, list[Any]]]
    batching_config: Path

    @classmethod
    def export(cls, tools_python: Path, directory: Path, log: Path) -> Fixtures:
        """Export the plugin's model with the tools environment and read back what it wrote."""
        directory.mkdir(parents=True, exist_ok=True)
        with log.open("a") as output:
            done = subprocess.run(
                [str(tools_python), str(EXPORT_SCRIPT), str(PLUGIN_MODEL), str(directory)],
                stdout=output, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise FixtureError(f"could not export {PLUGIN_MODEL} (log: {log})")
        config = directory / "stevedore-batching.toml"
        config.write_text(BATCHING_CONFIG)
        return cls(
            model=directory / "model.joblib",
            rows_file=directory / "rows.json",
            rows=json.loads((directory / "rows.json").read_text()),
            expected=json.loads((directory / "expected.json").read_text()),
            batching_config=config,
        )


def check_answer(url: str, payload: Payload, rows: Rows, expected: list[Any]) -> str:
    """Send the rows once; raises WrongAnswer unless the answer holds exactly the model's predictions."""
    request = payload.request(rows)
    try:
        answer = send(url, request.body, request.headers)
    except (OSError, HTTPException) as error:
        raise WrongAnswer(f"no answer: {type(error).__name__}: {error}") from None
    if answer.status != 200:
        raise WrongAnswer(f"HTTP {answer.status}: {answer.body[:200]!r}")
    try:
        got = payload.predictions(answer)
    except UnreadableAnswer as error:
        raise WrongAnswer(str(error)) from None
    return compare(got, expected)


def compare(got: list[Any], expected: list[Any]) -> str:
    """Raises WrongAnswer unless ``got`` holds exactly the model's predictions, row for row."""
    if len(got) != len(expected):
        raise WrongAnswer(f"{len(got)} predictions for {len(expected)} rows")
    wrong = [i for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)) if mine != theirs]
    if wrong:
        first = wrong[0]
        raise WrongAnswer(
            f"{len(wrong)}/{len(expected)} rows differ (row {first}: {got[first]!r}, model: {expected[first]!r})"
        )
    return f"{len(expected)}/{len(expected)} rows match the model"
