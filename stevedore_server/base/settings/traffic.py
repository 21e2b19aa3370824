"""``[traffic.NAME]`` tables: names clients call like a model, whose requests go to versions by weight."""

from __future__ import annotations

from typing import Any


def read_traffic(where: str, tables: Any) -> dict[str, Any]:
    """The traffic tables of ``tables`` (the file's ``traffic`` table), checked for their shape."""
    return dict(tables)
