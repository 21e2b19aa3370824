"""Redaction by JSON pointers (RFC 6901): the fields of a JSON value a payload log must never see.

    redacted({"email": "a@b.c", "rows": [[1, 2]]}, parse_pointers(["/email"]))  # {"email": "********", ...}

A pointer's tokens are unescaped as the RFC says (``~1`` is ``/``, ``~0`` is
``~``); an array index is ``0`` or a number without a leading zero. One
extension: the token ``*`` stands for every member of an object or every
element of an array (``/*/email``: the ``email`` of each row), where a key
``*`` would be matched anyway. A pointer to nothing in a value leaves it as it
is: bodies differ from one request to the next. The value is never changed in
place: what is redacted is a copy of the path down to each field. A body that
is no JSON (``Unparsed``: what a client sent malformed) has no fields a pointer
could name, so with any pointer it is withheld whole (``WITHHELD``): its text
may hold the very field a pointer names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: What a redacted field becomes (the settings' mask: the same as a secret's in ``stevedore-server settings``).
REDACTED = "********"
#: The token that stands for every member or element (the one extension of RFC 6901).
EVERY = "*"
ARRAY_INDEX = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
#: What a body that is no JSON becomes when any field is redacted (see the module).
WITHHELD = REDACTED + " (withheld: not JSON, so payload_log_redact could not be applied to it)"

Pointer = tuple[str, ...]


@dataclass(frozen=True)
class Unparsed:
    """A body that is no JSON, as its text: recorded as it is only when nothing is redacted."""

    text: str


def parse_pointer(text: str) -> Pointer:
    """The unescaped tokens of ``text``; ValueError for a pointer that does not start with ``/``."""
    if not text.startswith("/"):
        raise ValueError(f"JSON pointer {text!r} does not start with /")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/"))


def parse_pointers(texts: Iterable[str]) -> tuple[Pointer, ...]:
    return tuple(parse_pointer(text) for text in texts)


def redacted(value: Any, pointers: Sequence[Pointer]) -> Any:
    """``value`` with each field a pointer names replaced by ``REDACTED`` (an ``Unparsed`` body: its text, or
    ``WITHHELD`` with any pointer)."""
    if isinstance(value, Unparsed):
        return WITHHELD if pointers else value.text
    for pointer in pointers:
        value = redact_path(value, pointer)
    return value


def redact_path(value: Any, tokens: Pointer) -> Any:
    if not tokens:
        return REDACTED
    head, rest = tokens[0], tokens[1:]
    if isinstance(value, dict):
        keys = list(value) if head == EVERY else [head] if head in value else []
        return replaced(value, keys, rest) if keys else value
    if isinstance(value, list):
        if head == EVERY:
            return [redact_path(item, rest) for item in value]
        if ARRAY_INDEX.match(head) and int(head) < len(value):
            return replaced(value, [int(head)], rest)
    return value


def replaced(value: Any, keys: Sequence[Any], rest: Pointer) -> Any:
    """A copy of a dict or list with the members ``keys`` redacted along ``rest``."""
    copy = dict(value) if isinstance(value, dict) else list(value)
    for key in keys:
        copy[key] = redact_path(value[key], rest)
    return copy
