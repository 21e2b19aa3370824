"""The plugin's tests, installed or not.

``make test`` runs them in the repository's ``.venv``, where the plugin is not installed (the other tests count
the models installed there): its source folder is put on ``sys.path`` for this process, and the served test
records its distribution on a folder of its own that only the server it starts has on ``PYTHONPATH``. Where the
plugin is installed (``pip install -e 'contrib/text_ngram[test]'``), the tests use that installation instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: The plugin's source folder: its package, train.py, pyproject.toml.
SOURCE = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("stevedore_text_ngram") is None:
    sys.path.insert(0, str(SOURCE))
