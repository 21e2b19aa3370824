"""The runtime authors' test helpers (``stevedore_server.kit.runtime_testing``) against a real ``stevedore-server run``:
a model that serves answers through them, a model that failed gives its reason, and any other answer fails the
test with what the server said. (The runtimes' own tests in ``plugins/*/tests`` use every helper.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stevedore_server.kit.loopback import LiveServer
from stevedore_server.kit.runtime_testing import (
    UnexpectedAnswer,
    failure_reason,
    infer,
    input_tensor,
    model_file,
    predict,
    runtime_servers,
    tensor_values,
)

from .helpers import record_distribution
from .venvs import REPO

pytestmark = pytest.mark.server

#: The test distribution the servers select: it provides ``rowsum`` (``tests.predictors.RowSum``).
PLUGIN = "stevedore-test-kit-rowsum"


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[LiveServer], Path]]:
    """Two servers started by one ``runtime_servers`` (``rowsum`` serving, ``broken`` a file no runtime reads),
    and the folder of their logs; the servers stopped when the ``with`` ends, before the test looks."""
    site = tmp_path / "site"
    record_distribution(site, PLUGIN, {"rowsum": "tests.predictors:RowSum"})
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{site}")
    (tmp_path / "model.unknown").write_text("no runtime reads this")
    started: list[LiveServer] = []
    with runtime_servers(PLUGIN, tmp_path) as start:
        for _ in range(2):
            started.append(start("--model", f"broken={tmp_path / 'model.unknown'}"))
        yield started, tmp_path


def test_the_helpers_answer_what_the_server_answers(servers: tuple[list[LiveServer], Path]) -> None:
    (server, _), folder = servers
    assert predict(server, "rowsum", [[1, 2], [3, 4.5]]) == [3, 7.5]
    outputs = infer(server, "rowsum", [[1.0, 2.0], [3.0, 4.5]])
    assert tensor_values(next(iter(outputs.values()))).ravel().tolist() == [3.0, 7.5]
    assert "model.unknown" in failure_reason(server, "broken")
    assert sorted(path.name for path in folder.glob("server-*.log")) == ["server-0.log", "server-1.log"]


def test_any_other_answer_fails_the_test_with_what_the_server_said(servers: tuple[list[LiveServer], Path]) -> None:
    (server, _), _ = servers
    with pytest.raises(UnexpectedAnswer, match=r"POST .*/models/broken/predict: 503 .*model.unknown"):
        predict(server, "broken", [[1, 2]])
    with pytest.raises(UnexpectedAnswer, match=r"/v2/models/rowsum/infer: 400"):
        infer(server, "rowsum", [[1.0, 2.0]], ["no-such-output"])
    with pytest.raises(UnexpectedAnswer, match="rowsum did not fail"):
        failure_reason(server, "rowsum")


def test_the_servers_stop_when_the_block_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    record_distribution(site, PLUGIN, {"rowsum": "tests.predictors:RowSum"})
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{site}")
    with runtime_servers(PLUGIN, tmp_path) as start:
        server = start()
        assert server.process.poll() is None
    assert server.process.poll() is not None


def test_input_tensor_and_model_file_are_what_a_runtime_is_handed(tmp_path: Path) -> None:
    assert input_tensor([[1, 2, 3], [4, 5, 6]], "INT64", "b") == {
        "name": "b",
        "datatype": "INT64",
        "shape": [2, 3],
        "data": [1, 2, 3, 4, 5, 6],
    }
    spec = model_file("sklearn", tmp_path / "model.skops", tmp_path / "cache", trusted=True)
    assert (spec.runtime, spec.uri, spec.version, spec.trusted) == ("sklearn", str(tmp_path / "model.skops"), "1", True)
    assert spec.cache_dir == tmp_path / "cache"
