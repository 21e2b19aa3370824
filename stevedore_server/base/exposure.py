"""How exposed a server's settings leave it: whether its address is a loopback one, and the startup warnings
when it serves beyond this machine without keys, or lets every web page write to it."""

from __future__ import annotations

import ipaddress
import logging

from .settings import Settings

logger = logging.getLogger("stevedore.process")

#: In ``cors_origins``: any origin.
ANY_ORIGIN = "*"


def is_loopback(bind: str) -> bool:
    """Whether the address ``bind`` (as ``--host`` takes it) is a loopback one: 127.0.0.0/8, ``::1`` (also as
    ``::ffff:127.x.y.z``) or ``localhost``."""
    address = bind.strip().removeprefix("[").removesuffix("]").lower()
    if address.rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a name: this process cannot tell where it points
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def keys_on(settings: Settings) -> bool:
    """Whether API keys are configured (the server then asks for one)."""
    return bool(settings.api_keys or settings.api_key_file)


def warn_if_open(settings: Settings) -> None:
    """A warning each when the server asks no key and listens beyond this machine (whoever reaches the port may
    predict, train, load and unload), or lets any web page's browser write to it (CORS for ``*``). Once, from the
    process that starts the server, however many workers."""
    if keys_on(settings):
        return
    if not is_loopback(settings.host):
        logger.warning(
            "listening on %s with no API keys: every request is served unauthenticated, to whoever reaches the "
            "port; set API keys (STEVEDORE_API_KEYS, or --api-key-file with their SHA-256 digests) or listen on "
            "127.0.0.1",
            settings.host,
        )
    if ANY_ORIGIN in settings.cors_origins:
        logger.warning(
            "CORS allows any origin (--cors-origins '*') with no API keys: any web page a user of this server "
            "visits may predict, train, load and unload through their browser; list the origins, or set API keys"
        )
