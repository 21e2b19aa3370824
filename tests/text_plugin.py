"""The contrib text plugin (``contrib/text_ngram``: the ``ngram-lm`` and ``ngram-embed`` models) for the tests that
serve it with a real ``stevedore-server run``.

It is not installed in the repository's ``.venv`` (other tests count the models installed there): ``text_site``
records its distribution on a folder of the test's own, and the server finds the package through ``PYTHONPATH``,
as ``tests/test_traffic.py``'s ``serve`` does for the test plugins::

    site = text_site(directory)
    server = ready_server(here, log, "--plugins", TEXT_PLUGIN[0], PYTHONPATH=f"{REPO}:{site}")
"""

from __future__ import annotations

from pathlib import Path

from .helpers import record_distribution

REPO = Path(__file__).resolve().parents[1]
#: The plugin's distribution and its entry point (``stevedore.predictors``), as ``record_distribution`` takes them.
TEXT_PLUGIN = ("stevedore-text-ngram", {"text": "stevedore_text_ngram.predictor:predictors"})
#: The plugin's source folder: the package ``stevedore_text_ngram`` is in it.
TEXT_SOURCE = REPO / "contrib" / "text_ngram"
#: Its two models.
LANGUAGE_MODEL = "ngram-lm"
EMBEDDING_MODEL = "ngram-embed"


def text_site(directory: Path) -> str:
    """The ``PYTHONPATH`` fragment that makes a server started with ``--plugins stevedore-text-ngram`` serve the
    plugin: its source folder, and ``directory / "text-site"`` where its distribution is recorded (once, however
    often this is called for one directory)."""
    site = directory / "text-site"
    if not site.exists():
        record_distribution(site, *TEXT_PLUGIN)
    return f"{TEXT_SOURCE}:{site}"
