"""Other processes by their ids: whether one lives, when it started, how it ended, and stopping its group."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger("stevedore.processes")


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, to a second), from Linux's ``/proc``; None when it
    is gone or this cannot be read here. With the pid, it names one process: a pid is reused, a start time not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # Field 22 of the file, the 20th after the command's closing parenthesis: clock ticks since boot.
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    """Whether a process (or, with a negative number, a process group) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_description(exitcode: int | None) -> str:
    """How a process ended, in words: 'exited with status 3', 'was killed by SIGKILL'."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def kill_group(pgid: int) -> None:
    """SIGKILL a process group (a process and what it started), if it is still there."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM to a process group, SIGKILL if it is still there after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    logger.warning("stopping the process group %s of an interrupted job", pgid)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(-pgid):
            return
        time.sleep(0.1)
    kill_group(pgid)
