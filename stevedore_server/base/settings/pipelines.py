"""``[pipelines.NAME]`` tables: pipelines of models, read and checked for their shape (what they call is checked
once the models are loaded, by ``core.pipelines``)."""

from __future__ import annotations

from typing import Any


def read_pipelines(where: str, tables: Any) -> dict[str, Any]:
    """The pipelines of ``tables`` (the file's ``pipelines`` table, or a plugin's definitions)."""
    return dict(tables)
