"""The plugin served by a real ``stevedore-server run`` over loopback, found as an installed distribution is.

Uses the repository's test helpers (``tests/``): run from the repository's root, as ``make test`` does. Where the
plugin is not installed, ``tests.text_plugin.text_site`` records its distribution for the server alone."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.text_plugin import EMBEDDING_MODEL, LANGUAGE_MODEL, REPO, TEXT_PLUGIN, text_site
from tests.venvs import Server, Venv, ready_server


def installed_here() -> bool:
    try:
        distribution(TEXT_PLUGIN[0])
    except PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("text-ngram")
    python_path = str(REPO) if installed_here() else f"{REPO}:{text_site(directory)}"
    here = Venv(Path(sys.prefix), ())
    running = ready_server(
        here, directory / "server.log", "--plugins", TEXT_PLUGIN[0], deadline=120, PYTHONPATH=python_path
    )
    yield running
    running.stop()


def test_both_models_are_served(server: Server) -> None:
    listed = httpx.get(server.url + "/models", timeout=30)
    assert listed.status_code == 200, listed.text
    catalogue = listed.json()
    assert {model["name"] for model in catalogue["models"]} == {LANGUAGE_MODEL, EMBEDDING_MODEL}
    assert catalogue["failed_plugins"] == []


def test_the_language_model_continues_prompts(server: Server) -> None:
    prompts = ["Before we proceed any", {"prompt": "My lord, the king", "max_tokens": 6, "seed": 1, "temperature": 1}]
    answer = httpx.post(server.url + f"/models/{LANGUAGE_MODEL}/predict", json=prompts, timeout=30)
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["predictions"]
    assert first.startswith("further,") and len(first.split()) == 32
    assert len(second.split()) == 6
    again = httpx.post(server.url + f"/models/{LANGUAGE_MODEL}/predict", json=prompts, timeout=30)
    assert again.json()["predictions"] == [first, second]


def test_the_embedding_model_embeds_by_meaning(server: Server) -> None:
    texts = ["the king and his crown", "the queen upon her royal throne", "bread and corn for the hungry citizens"]
    answer = httpx.post(server.url + f"/models/{EMBEDDING_MODEL}/predict", json=texts, timeout=30)
    assert answer.status_code == 200, answer.text
    vectors = np.array(answer.json()["predictions"])
    assert vectors.shape == (3, 64)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_bad_input_is_refused_and_the_server_keeps_serving(server: Server) -> None:
    refused = httpx.post(server.url + f"/models/{EMBEDDING_MODEL}/predict", json=[3], timeout=30)
    assert refused.status_code == 422, refused.text
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
