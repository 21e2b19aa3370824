"""Debian's PostgreSQL server programs, for the throwaway clusters of the jobs tests and of the soak: where they
are, and how to run them (as the ``postgres`` user when root: Debian's PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The programs a throwaway cluster needs.
TOOLS = ("initdb", "pg_ctl")


def tool(name: str) -> str | None:
    """A PostgreSQL server program: on the PATH, else where Debian's ``postgresql`` puts it (not on the PATH)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda path: int(path.parts[-3]))
    return str(versions[-1]) if versions else None


def as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command
