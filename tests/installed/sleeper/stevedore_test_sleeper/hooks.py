"""A health check that fails while the file named by ``STEVEDORE_TEST_SLEEPER_UNHEALTHY`` exists: a plugin's
check that a test can turn on and off from outside the server's processes (Ray's replicas too)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stevedore_server import hookimpl
from stevedore_server.hookspecs import HealthCheck

FLAG = "STEVEDORE_TEST_SLEEPER_UNHEALTHY"


def disk_check() -> tuple[bool, str]:
    flag = os.environ.get(FLAG)
    if flag and Path(flag).exists():
        return False, f"{flag} says the disk is full"
    return True, "disk fine"


@hookimpl
def stevedore_health_checks() -> Mapping[str, HealthCheck]:
    return {"sleeper-disk": disk_check}
