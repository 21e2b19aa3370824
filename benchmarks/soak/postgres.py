"""A throwaway PostgreSQL cluster on a free loopback port, which the soak stops and starts again (a fault).

Debian's PostgreSQL refuses to run as root, so the cluster runs as the ``postgres`` user when the soak is root
(as ``tests/test_jobs_postgres.py`` runs its own). Its server programs are where Debian's ``postgresql`` package
puts them (not on the PATH), unless the PATH has them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stevedore_server.kit.loopback import free_ports
from tests.postgres import as_postgres, tool

TOOLS = ("initdb", "pg_ctl", "pg_isready", "createdb")
#: Seconds a start or stop of the cluster may take.
COMMAND_TIMEOUT = 60.0


class MissingTool(RuntimeError):
    """What the soak needs is not installed here (``make soak`` installs it)."""


class Postgres:
    """A cluster of its own in a temporary directory; ``url`` once started."""

    def __init__(self) -> None:
        missing = [name for name in TOOLS if tool(name) is None]
        if missing:
            raise MissingTool(f"PostgreSQL is not installed (no {', '.join(missing)}): `make deb-packages`")
        self.root = Path(tempfile.mkdtemp(prefix="stevedore-soak-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        (self.port,) = free_ports(1)
        self.data = self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, name: str, *args: str, postgres_user: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(tool(name)), *args]
        return subprocess.run(
            as_postgres(command) if postgres_user else command,
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip

    def _checked(self, name: str, *args: str) -> None:
        result = self._run(name, *args)
        if result.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def create(self) -> None:
        """Make the cluster and start it."""
        self._checked("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()

    def database(self, name: str) -> str:
        """A new database; its URL."""
        self._checked("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"{self.url}/{name}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._checked("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """A fast stop: connections are ended at once, as when the database's host goes away."""
        self._checked("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def answers(self) -> bool:
        """Whether the server accepts connections now (``pg_isready``)."""
        return self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), postgres_user=False).returncode == 0

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
