"""A setting's value from where it was written: a TOML value checked against the setting's type, or an
environment variable's text parsed into it."""

from __future__ import annotations

import types
import typing
from typing import Any

from stevedore_server.base.errors import SettingError


def base_type(hint: Any) -> type:
    """``int`` for ``int | None``, ``tuple`` for ``tuple[str, ...] | None``, and so on."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple or (args and typing.get_origin(args[0]) is tuple):
        return tuple
    if typing.get_origin(hint) is dict or (args and typing.get_origin(args[0]) is dict):
        return dict
    found = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return typing.cast(type, found)


#: A type as an error says what a value should be: "'eighty' is not an integer".
TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", tuple: "a list of strings",
              dict: "a table"}  # fmt: skip
#: What a variable may say for true and for false.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def takes_text(hint: Any) -> bool:
    """A number's setting that may also be written as text (``int | str``: a size with its unit)."""
    return str in typing.get_args(hint)


def wanted(kind: type) -> str:
    return TYPE_WORDS.get(kind, f"a {kind.__name__}")


def typed(name: str, hint: Any, raw: Any, where: str) -> Any:
    """A value from the TOML file (``where``: the file, and the table unless at the top), checked against the
    setting's type."""
    kind = base_type(hint)
    if kind is dict and isinstance(raw, dict) and all(isinstance(key, str) for key in raw):
        return raw
    if kind is tuple and isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    if kind is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    if isinstance(raw, str) and takes_text(hint):  # a size with its unit: "2GiB"
        return raw
    raise SettingError(name, f"{raw!r} is not {wanted(kind)}", f"in {where}")


def parse(name: str, hint: Any, raw: str, variable: str) -> Any:
    """A value from an environment variable."""
    kind = base_type(hint)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        words = ", ".join(f"{yes}/{no}" for yes, no in zip(TRUE_WORDS, FALSE_WORDS, strict=True))
        raise SettingError(name, f"{raw!r} is not true or false ({words})", variable)
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            if takes_text(hint):
                return raw.strip()
            raise SettingError(name, f"{raw!r} is not {wanted(kind)}", variable) from None
    if kind is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw.strip()
