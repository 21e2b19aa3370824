"""A setting's value from where it was written: a TOML value checked against the setting's type, or an
environment variable's text parsed into it."""

from __future__ import annotations

import types
import typing
from typing import Any

from stevedore_server.base.errors import StartupError


def base_type(hint: Any) -> type:
    """``int`` for ``int | None``, ``tuple`` for ``tuple[str, ...] | None``, and so on."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple or (args and typing.get_origin(args[0]) is tuple):
        return tuple
    if typing.get_origin(hint) is dict or (args and typing.get_origin(args[0]) is dict):
        return dict
    found = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return typing.cast(type, found)


def typed(name: str, hint: Any, raw: Any, where: str) -> Any:
    """A value from the TOML file, checked against the setting's type."""
    kind = base_type(hint)
    if kind is dict and isinstance(raw, dict) and all(isinstance(key, str) for key in raw):
        return raw
    if kind is tuple and isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    if kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    wanted = "a list of strings" if kind is tuple else "a table" if kind is dict else f"a {kind.__name__}"
    raise StartupError(f"setting {name} (in {where}): {raw!r} is not {wanted}")


def parse(name: str, hint: Any, raw: str, variable: str) -> Any:
    """A value from an environment variable."""
    kind = base_type(hint)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise StartupError(f"setting {name} ({variable}): {raw!r} is not a boolean")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            wanted = "an integer" if kind is int else "a number"
            raise StartupError(f"setting {name} ({variable}): {raw!r} is not {wanted}") from None
    if kind is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.strip()
