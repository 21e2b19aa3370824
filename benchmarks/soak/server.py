"""The server under soak: a fresh virtual environment with the plugins installed from wheels, its settings file,
and a real ``stevedore-server run`` in a process group of its own, stopped by that group.

The plugins: the example plugin (``iris``, ``iris-proba``: scikit-learn on threads), and the test plugins
``cpu`` (``spin``, pure Python, run in ``processes = 2``, streaming), ``trainer`` (``iris-trainer`` and
``misbehaving-trainer``, the jobs) and ``sleeper`` (the model the burst overfills).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import httpx

from tests.venvs import CONTRIB, REPO, Server, Venv, build_wheelhouse, copy_source, plugins_venv

WORKERS = 2
#: The model in worker processes, and how many each uvicorn worker runs.
PROCESS_MODEL = "spin"
PROCESSES = 2
#: The model the burst sends past its queue: one thread and two waiting per worker.
BURST_MODEL = "sleeper"
SLEEPER_CONCURRENCY = 1
SLEEPER_QUEUE = 2
#: Seconds a cancelled or interrupted job gets after SIGTERM.
JOB_GRACE = 2.0

SETTINGS = f"""
workers = {WORKERS}
max_jobs = 2
job_grace_period = {JOB_GRACE}
log_format = "json"

[models.{PROCESS_MODEL}]
processes = {PROCESSES}
timeout = 20

[models.{BURST_MODEL}]
max_concurrency = {SLEEPER_CONCURRENCY}
max_queue = {SLEEPER_QUEUE}
timeout = 10
"""

TEST_PLUGINS = ("cpu", "trainer", "sleeper")
REQUIREMENTS = (
    "stevedore-server[postgres]",
    "stevedore-sklearn-logreg",
    "stevedore-test-cpu",
    "stevedore-test-trainer",
    "stevedore-test-sleeper",
)
#: What uvicorn logs once a worker's lifespan has started: a worker serves from then on.
STARTED = "Application startup complete."
#: Seconds a server (or a replaced worker) gets to start: its models load and self-test on a shared machine.
START_DEADLINE = 180.0
#: Seconds from SIGTERM to SIGKILL when stopping: the graceful time-out (30 s) and some.
STOP_GRACE = 45.0
#: Ids (job ids, error ids, pids) and numbers in a log message, for counting messages alike.
#: A line naming an exception or a warning (a traceback's last line, a ``warnings.warn`` line).
EXCEPTION_LINE = re.compile(r"\w+(Error|Exception|Warning)\b:")
NUMBERS = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{32}|\d+(\.\d+)?")


def make_wheelhouse(root: Path) -> Path:
    """Wheels of the core, the example plugin and their dependencies (the one step with network access)."""
    sources = [copy_source(REPO, root / "src" / "core"), copy_source(CONTRIB, root / "src" / "sklearn_logreg")]
    return build_wheelhouse(root / "wheelhouse", sources, ["setuptools>=77", "psycopg[binary]>=3.1", "pip"])


def soak_venv(root: Path, wheelhouse: Path | None) -> Venv:
    """The server's environment, built once for both halves (from ``wheelhouse``, or one built here)."""
    return plugins_venv(root, wheelhouse or make_wheelhouse(root), TEST_PLUGINS, REQUIREMENTS)


class SoakServer(Server):
    """One ``stevedore-server run`` of the soak, started as the tests start theirs (``tests.venvs.Server``: free
    loopback ports, a process group of its own), with the soak's settings file."""

    @classmethod
    def start(cls, environment: Venv, directory: Path, **env: str) -> SoakServer:  # type: ignore[override]
        directory.mkdir(parents=True, exist_ok=True)
        settings = directory / "stevedore.toml"
        settings.write_text(SETTINGS)
        started = super().start(environment, directory / "server.log", "--config", str(settings), **env)
        return cast(SoakServer, started)  # Server.start makes an instance of ``cls``

    @property
    def pid(self) -> int:
        return self.process.pid

    def entries(self) -> list[dict[str, Any]]:
        """The log's JSON lines (the server logs JSON; anything else, such as a crash's output, is skipped)."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def startups(self) -> int:
        """How many worker startups have completed so far (replacements included)."""
        return self.log().count(STARTED)

    def wait_started(self, count: int, deadline: float = START_DEADLINE) -> None:
        """Wait until ``count`` worker startups have completed and the server is ready."""
        stop_at = time.monotonic() + deadline
        while time.monotonic() < stop_at:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; its log: {self.log_path}")
            if self.startups() >= count and self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start {count} workers within {deadline:g} s; log: {self.log_path}")

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def notable(self) -> Counter[str]:
        """The log's warnings and errors, counted by message (ids and numbers made ``N``), and the output that is
        not the server's JSON (a library's warning, a traceback printed by a dying process), by its last word."""
        found: Counter[str] = Counter()
        stray: list[str] = []
        for line in [*self.log().splitlines(), "{}"]:
            if not line.startswith("{"):
                stray.append(line)
                continue
            if stray:
                found["(not a log line) " + NUMBERS.sub("N", last_word(stray))[:140]] += 1
                stray = []
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("warning", "error", "critical"):
                message = NUMBERS.sub("N", str(entry.get("message")))[:140]
                found[f"{entry['level']} {entry.get('logger')}: {message}"] += 1
        return found

    def tracebacks(self) -> dict[str, str]:
        """The message and traceback logged under each error id (the id a client's 500 names)."""
        found = {}
        for entry in self.entries():
            message = str(entry.get("message", ""))
            if "error id " in message:
                error_id = message.rsplit("error id ", 1)[1].rstrip(")").split(",")[0].strip()
                found[error_id] = message + "\n" + str(entry.get("traceback", ""))
        return found

    def stop(self) -> int | None:  # type: ignore[override]
        """SIGTERM to the process group, SIGKILL to it after ``STOP_GRACE`` s; the exit code (None if killed)."""
        try:
            self._signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=STOP_GRACE)
                return None
        finally:
            self._log.close()

    def _signal(self, signum: int) -> None:
        try:
            self.signal_group(signum)
        except ProcessLookupError:
            pass


def last_word(lines: list[str]) -> str:
    """What a block of stray output comes to: its last exception or warning line, else its last line."""
    named = [line.strip() for line in lines if EXCEPTION_LINE.search(line)]
    written = [line.strip() for line in lines if line.strip()]
    return (named or written or [""])[-1]
