"""A test plugin's health check for ``test_probes``, whose server runs in another process: it appends a line to
the file named by ``CHECK_RUNS`` each time it runs (so a test counts the runs from outside), and, while the file
named by ``CHECK_FAILS`` exists, fails with an error whose text holds that file's path (as a real check's error
often holds one: a disk, a mount, a model file)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from stevedore_server import hookimpl
from stevedore_server.hookspecs import HealthCheck

#: The variable naming the file a line a run is appended to.
CHECK_RUNS = "STEVEDORE_TEST_CHECK_RUNS"
#: The variable naming the file whose existence makes the check fail.
CHECK_FAILS = "STEVEDORE_TEST_CHECK_FAILS"
#: Seconds a run takes: long enough for concurrent probes to meet one in progress.
RUN_SECONDS = 0.05


def counted_check() -> tuple[bool, str]:
    # Appended and closed at once: each line is whole on disk before the check returns, for a reader elsewhere.
    with open(os.environ[CHECK_RUNS], "a") as runs:
        runs.write("run\n")
    time.sleep(RUN_SECONDS)
    flag = Path(os.environ.get(CHECK_FAILS, "/nonexistent"))
    if flag.exists():
        raise OSError(f"cannot read {flag}: the volume is gone")
    return True, "fine"


@hookimpl
def stevedore_health_checks() -> Mapping[str, HealthCheck]:
    return {"counted": counted_check}
