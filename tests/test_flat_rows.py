"""One row sent where the schema wants a list of rows (``[5.1, 3.5, 1.4, 0.2]`` to iris, one labelled object to its
score) gets the usual refusal and a hint to wrap it, on each route that takes JSON rows, of a real server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stevedore_server.base.errors import InvalidPayload
from stevedore_server.base.validation import SchemaValidator

from .venvs import Server, Venv

ROW = [5.1, 3.5, 1.4, 0.2]
LABELLED = {"x": ROW, "y": 0}
ROW_HINT = "; send rows: wrap it in a list, [[5.1, 3.5, 1.4, 0.2]]"
LABELLED_HINT = '; send rows: wrap it in a list, [{"x": [5.1, 3.5, 1.4, 0.2], "y": 0}]'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("flat-rows") / "server.log"
    running = Server.start(Venv(Path(sys.prefix), ()), log, "--plugins", "stevedore-sklearn-logreg")
    try:
        running.wait_for("/readyz")
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("path", "body", "status", "hint"),
    [
        ("/models/iris/predict", ROW, 422, ROW_HINT),
        ("/models/iris/versions/1/predict", ROW, 422, ROW_HINT),
        ("/models/iris/score", LABELLED, 422, LABELLED_HINT),
        ("/predict", {"predictor": "iris", "payload": ROW}, 422, ROW_HINT),
        ("/score", {"predictor": "iris", "payload": LABELLED}, 422, LABELLED_HINT),
    ],
)
def test_one_row_sent_as_rows_gets_a_hint(server: Server, path: str, body: Any, status: int, hint: str) -> None:
    response = httpx.post(server.url + path, json=body, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"].endswith("does not match the model's schema" + hint), response.text


def test_the_rows_as_hinted_are_served(server: Server) -> None:
    assert httpx.post(server.url + "/models/iris/predict", json=[ROW], timeout=10).status_code == 200
    assert httpx.post(server.url + "/models/iris/score", json=[LABELLED], timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        [[5.1, 3.5, 1.4]],  # rows, one too short: no hint, the details say what is wrong
        [],
        "text",
        [ROW, 5.1],
    ],
)
def test_no_hint_for_other_mistakes(server: Server, body: Any) -> None:
    response = httpx.post(server.url + "/models/iris/predict", json=body, timeout=10)
    assert response.status_code == 422 and "send rows" not in response.text, response.text


def test_a_long_row_is_shown_cut() -> None:
    validator = SchemaValidator({"type": "array", "items": {"type": "array", "items": {"type": "number"}}})
    with pytest.raises(InvalidPayload) as refused:
        validator.validate([*range(1000), "x"])
    message = str(refused.value)
    assert message.endswith(" ...]]") and len(message) < 160, message
