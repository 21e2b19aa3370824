"""The soak with faults (issue 23): a real server under a mixed load for a bounded time, while faults strike on a
schedule; then a report in which every failure is explained by a stated rule, every job ends as it should, and
no process grew past a stated bound.

    make soak                                # SOAK_DURATION seconds of load (600 by default)
    python -m benchmarks.soak 60             # the same, from the repository's root, with its .venv

    from benchmarks.soak import run_soak
    report = run_soak(60, directory)         # a SoakReport: .ok, .problems, .text()

One server has one jobs database, so the duration is two halves, each a server of its own on the same
environment (built once, from wheels): SQLite first, then PostgreSQL, whose stop and start is a fault of that
half only. Each half: ``stevedore-server run --workers 2`` with ``spin`` in ``processes = 2``, the mixed load
(``load``), the faults (``faults``) in cycles of about 100 s (one cycle in a short soak), resources read at the
start (after a warm-up), the middle and the end (``resources``), then the jobs followed to their end (``jobs``)
and the server stopped by its process group (``server``). Failures are explained by the rules the faults
state (``rules``); the report (``report``) says what is not.

The modules: ``run`` (the halves), ``server`` (environment, settings, the server process), ``postgres`` (the
cluster), ``load`` and ``clients`` (the requests), ``records``, ``jobs``, ``faults``, ``rules``,
``resources``, ``report``. They import ``tests.venvs`` for the environment, so run them from the repository's
root.
"""

from __future__ import annotations

from .postgres import MissingTool
from .report import SoakReport
from .run import run_soak

__all__ = ["MissingTool", "SoakReport", "run_soak"]
