"""Optional API keys with scopes: ``Authorization: Bearer KEY``, checked in constant time against SHA-256 digests.

A key holds scopes (``base.scopes``: ``infer``, ``train``, ``admin``). A
line of the key file is a digest, then optionally its scopes, comma-separated;
a line without scopes, and a key given as ``api_keys``, has every right.

Each request's ``Caller`` (who sent it, with which rights) is put in its ASGI
scope by the middleware when keys are on (``caller_of`` reads it back): a route
checks what it needs against it, a job records its ``key_id``, a probe answers
details only to a caller that is not ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stevedore_server.base.errors import SettingError
from stevedore_server.base.scopes import ADMIN, HOLDS, INFER, TRAIN
from stevedore_server.base.settings import Settings

__all__ = ["ADMIN", "INFER", "TRAIN", "APIKeys", "Caller", "caller_of"]

DIGEST = re.compile(r"[0-9a-f]{64}")
#: Characters of the hex digest that name a key (in a job's record, a log line): enough to tell keys apart,
#: too few to help guess one.
KEY_ID_LENGTH = 12
#: Where the middleware leaves the request's caller, in its ASGI scope.
CALLER = "stevedore.caller"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: their key's id (None without one) and the scopes they hold."""

    key_id: str | None
    scopes: frozenset[str]
    #: API keys are on and the request carried no valid key (only open routes, the probes, serve it).
    anonymous: bool = False

    def can(self, scope: str) -> bool:
        return scope in self.scopes


#: Every caller when API keys are off.
ANYONE = Caller(None, HOLDS[ADMIN])
#: A caller without a valid key while keys are on.
NOBODY = Caller(None, frozenset(), anonymous=True)


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller of a request (its ASGI scope): whom the middleware identified, or anyone when keys are off."""
    found = scope.get(CALLER)
    return found if isinstance(found, Caller) else ANYONE


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class AcceptedKey:
    digest: bytes
    caller: Caller


class APIKeys:
    """The accepted keys, as digests only: plain keys are not kept, so they cannot leak into a log."""

    def __init__(self, accepted: list[AcceptedKey]) -> None:
        self.accepted = accepted

    @classmethod
    def from_settings(cls, settings: Settings) -> APIKeys | None:
        """None when no key is configured: authentication is off."""
        accepted = [accepted_key(digest(key), HOLDS[ADMIN]) for key in settings.api_keys]
        if settings.api_key_file:
            accepted += read_key_file(settings.api_key_file)
        return cls(accepted) if accepted else None

    def identify(self, authorization: str | None) -> Caller:
        """The caller a ``Bearer`` key names, or ``NOBODY`` when it names none."""
        scheme, _, key = (authorization or "").partition(" ")
        presented = digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else b""
        # Compare with every digest, without stopping early: the time taken says nothing about the keys.
        found = NOBODY
        for accepted in self.accepted:
            if hmac.compare_digest(presented, accepted.digest):
                found = accepted.caller
        return found

    def accepts(self, authorization: str | None) -> bool:
        return not self.identify(authorization).anonymous


def accepted_key(key_digest: bytes, scopes: frozenset[str]) -> AcceptedKey:
    return AcceptedKey(key_digest, Caller(key_digest.hex()[:KEY_ID_LENGTH], scopes))


def read_key_file(path: str) -> list[AcceptedKey]:
    """A hex SHA-256 digest a line, optionally followed by its scopes; blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise SettingError("api_key_file", f"cannot read {path}: {error.strerror}") from None
    accepted = []
    for number, line in enumerate(lines, start=1):
        words = line.split("#")[0].split(None, 1)  # the digest, then its scopes if any
        if not words:
            continue
        where = f"line {number} of {path}"
        if not DIGEST.fullmatch(words[0].lower()):
            raise SettingError("api_key_file", f"{where} is not a SHA-256 hex digest (then, optionally, scopes)")
        accepted.append(accepted_key(bytes.fromhex(words[0]), read_scopes(" ".join(words[1:]), where)))
    return accepted


def read_scopes(text: str, where: str) -> frozenset[str]:
    """The scopes a key file line names after its digest (every right when it names none)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in HOLDS]
    if unknown:
        raise SettingError(
            "api_key_file", f"{where}: unknown scope {unknown[0]!r} (scopes: {', '.join(HOLDS)}, comma-separated)"
        )
    return frozenset().union(*(HOLDS[name] for name in names)) if names else HOLDS[ADMIN]
