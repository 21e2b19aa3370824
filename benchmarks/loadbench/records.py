"""Raw results as JSON lines, one object per measurement, start, install or failure."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench")


class Records:
    """Appends to ``raw.jsonl`` as the run goes, so a run cut short keeps what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        path.touch()

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        record = {"kind": kind, **fields}
        with self._lock:
            self.items.append(record)
            with self.path.open("a") as output:
                output.write(json.dumps(record) + "\n")
        return record

    def failure(self, target: str, stage: str, error: str, **fields: Any) -> None:
        """A clear line now and a record for the table; the run goes on with the other targets."""
        where = f" ({', '.join(f'{k} {readable(v)}' for k, v in fields.items())})" if fields else ""
        logger.error("!! %s%s: %s failed: %s", target, where, stage, error)
        self.add("failure", target=target, stage=stage, error=error, **fields)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [record for record in self.items if record["kind"] == kind]


def readable(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
