"""Optional API keys: ``Authorization: Bearer KEY``, checked in constant time against SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings

DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class APIKeys:
    """The accepted keys, as digests only: plain keys are not kept, so they cannot leak into a log."""

    def __init__(self, digests: list[bytes]) -> None:
        self.digests = digests

    @classmethod
    def from_settings(cls, settings: Settings) -> APIKeys | None:
        """None when no key is configured: authentication is off."""
        digests = [digest(key) for key in settings.api_keys]
        if settings.api_key_file:
            digests += read_digests(settings.api_key_file)
        return cls(digests) if digests else None

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, key = (authorization or "").partition(" ")
        presented = digest(key.strip()) if scheme.lower() == "bearer" and key.strip() else b""
        # Compare with every digest, without stopping early: the time taken says nothing about the keys.
        matched = False
        for accepted in self.digests:
            matched |= hmac.compare_digest(presented, accepted)
        return matched


def read_digests(path: str) -> list[bytes]:
    """Hex SHA-256 digests, one a line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise StartupError(f"setting api_key_file: cannot read {path}: {error.strerror}") from None
    digests = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#")[0].strip().lower()
        if not text:
            continue
        if not DIGEST.match(text):
            raise StartupError(f"setting api_key_file: line {number} of {path} is not a SHA-256 hex digest")
        digests.append(bytes.fromhex(text))
    return digests
