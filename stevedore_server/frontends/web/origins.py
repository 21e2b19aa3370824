"""Requests a web page made a browser send: refused at the HTTP edge, before anything of them runs.

A server on a laptop serves without API keys by default, so two kinds of
request from any page the user happens to visit must not reach it:

- **DNS rebinding** (``BrowserGuard``, its hosts): a page whose own name its author
  points at 127.0.0.1 reads and writes the server as if it were the page's
  own origin. Its requests carry that name in ``Host``; one whose ``Host``
  names a host ``allowed_hosts`` does not allow gets 400 (an entry may be an
  IP network, ``10.0.0.0/8``, for the probes that call a pod by its address:
  no page can rebind an address, it has no name). By default
  (``default_allowed_hosts``) a server bound to a loopback address allows the
  loopback names only, and one bound to another address any: it is meant to
  be reached by names this process cannot know (its operator sets
  ``allowed_hosts``, or keys). A request without ``Host`` (HTTP/1.0) is
  allowed: a browser always sends one, so it came from no page.
- **Cross-site writes** (``BrowserGuard``, its origins): any page can send a "simple" POST
  (a form, or ``fetch`` of ``text/plain``) to any address without a CORS
  preflight; the browser only hides the answer. A request that can change
  something (any method but GET, HEAD and OPTIONS) whose ``Origin`` is
  neither the server's own (the origin its ``Host`` names, http or https:
  behind a TLS proxy the server cannot tell which) nor one ``cors_origins``
  allows gets 403. ``Origin: null`` (a sandboxed frame, a file, a redirect)
  is nobody's own. Without ``Origin``, a browser's ``Sec-Fetch-Site:
  cross-site`` says the same. Requests with neither (curl, the SDKs, other
  servers) are unchanged: only browsers send them.

Where they sit (``frontends.app.middleware``), outermost first:
``RequestContext``, ``BrowserGuard``, CORS, API keys. Inside ``RequestContext``, so
a refusal has a request id, an access line and its metric. Outside CORS, so a
refused request is decided before CORS looks at it and carries no CORS
header, while CORS still answers the preflights (OPTIONS is never refused
for its origin; a rebinding preflight is refused for its ``Host``). Outside
the API keys, so a forged request gets the same 403 whether keys are on or
off, and its key, if any, is never looked at.

gRPC is left alone: no browser speaks it (gRPC-Web needs a proxy this server
does not have), so no page can forge or rebind a call, and its ``:authority``
is not checked.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from stevedore_server.base.errors import BadRequest, ClientError, Forbidden, quoted
from stevedore_server.base.exposure import is_loopback
from stevedore_server.base.settings import Settings

from .middleware import send_error
from .routing import ErrorHandler

logger = logging.getLogger("stevedore.http")

#: In ``allowed_hosts`` or ``cors_origins``: any host, any origin.
ANY = "*"
#: The names a loopback-bound server allows by default (with the address it is bound to).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Methods that change nothing: a page may send them anywhere, and it cannot read another origin's answer.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A ``Host`` value, lowered: a name or a bracketed IPv6 address, then an optional port (RFC 9110, 7.2).
HOST = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]/@\s]+)(?::([0-9]*))?")
#: An ``Origin`` value, lowered, of the schemes a server of its own can have.
ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[^:\[\]/@\s]+)(?::([0-9]+))?")
DEFAULT_PORTS = {"http": 80, "https": 443}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Characters of a client's ``Host`` or ``Origin`` quoted in an error message.
SHOWN = 100
#: ``Host`` values whose verdict is kept (beyond them, the verdicts kept are forgotten).
KEPT_VERDICTS = 256


def browser_guards(settings: Settings, protocols: Mapping[str, ErrorHandler] | None = None) -> list[Middleware]:
    """This module's middleware for ``settings``: the host check where hosts are limited, and the origin check
    unless CORS allows any origin (none where neither is); ``protocols`` as ``middleware.send_error`` takes them."""
    hosts = allowed_hosts(settings.allowed_hosts, settings.host)
    origins = None if ANY in settings.cors_origins else frozenset(settings.cors_origins)
    if hosts is None and origins is None:
        return []
    networks = allowed_networks(settings.allowed_hosts)
    return [Middleware(BrowserGuard, hosts=hosts, cors_origins=origins, networks=networks, protocols=protocols)]


def allowed_hosts(given: tuple[str, ...] | None, bind: str) -> frozenset[str] | None:
    """The host names (as ``host_name`` gives them) the ``allowed_hosts`` setting ``given`` allows a server bound
    to ``bind``; None for any."""
    if given is None:
        return default_allowed_hosts(bind)
    if ANY in given:
        return None
    names = {entry: host_name(bracketed(entry.strip())) for entry in given if "/" not in entry}
    for entry in (entry for entry, name in names.items() if name is None):
        logger.warning("allowed_hosts: %r is no host name (`name`, `name:port` or `[IPv6]`): it allows none", entry)
    return frozenset(name for name in names.values() if name is not None)


def allowed_networks(given: tuple[str, ...] | None) -> tuple[Network, ...]:
    """The IP networks ``allowed_hosts`` names (``10.0.0.0/8``): a ``Host`` that is an address of one is allowed,
    as the kubelet's probes and Prometheus send (a pod's address, which no list of names can hold)."""
    networks = []
    for entry in given or ():
        if "/" not in entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            logger.warning("allowed_hosts: %r is no IP network (`10.0.0.0/8`, `fd00::/8`): it allows none", entry)
    return tuple(networks)


def default_allowed_hosts(bind: str) -> frozenset[str] | None:
    """Bound to a loopback address, only this machine's browsers reach the server, and a page of another name
    only by rebinding it: the loopback names and the bound address. Bound elsewhere, any (None)."""
    if not is_loopback(bind):
        return None
    own = host_name(bracketed(bind))
    return LOOPBACK_NAMES | ({own} if own else set())


def in_networks(name: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``name`` (as ``host_name`` gives it) is an IP address of one of ``networks``."""
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return any(address in network for network in networks)


def bracketed(entry: str) -> str:
    """An IPv6 address of a setting in the brackets ``Host`` puts it in (``::1`` is ``[::1]``)."""
    return f"[{entry}]" if entry.count(":") > 1 and not entry.startswith("[") else entry


def host_name(host: str) -> str | None:
    """The name part of a ``Host`` value, lowered, without its port or a final dot (``[::1]`` keeps its
    brackets); None when it is none."""
    match = HOST.fullmatch(host.lower())
    if match is None:
        return None
    return match[1].rstrip(".") or None


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is the one the request's ``host`` names, with http or https (a TLS proxy in front of the
    server would make it the second); a port left out is the scheme's default."""
    parsed = ORIGIN.fullmatch(origin.lower())
    served = HOST.fullmatch(host.lower()) if host is not None else None
    if parsed is None or served is None:
        return False
    scheme, name, port = parsed.groups()
    default = DEFAULT_PORTS[scheme]
    return name.rstrip(".") == served[1].rstrip(".") and int(port or default) == int(served[2] or default)


class BrowserGuard:
    """Both checks, in one pass over the headers (this runs on every request): 400 for a ``Host`` that names none
    of ``hosts`` (None: any host), then 403 for a write from a page of another origin than the server's own and
    than ``cors_origins`` (None: any origin). A ``Host`` value's verdict is kept, for the few values clients send."""

    def __init__(
        self,
        app: ASGIApp,
        hosts: frozenset[str] | None,
        cors_origins: frozenset[str] | None,
        networks: tuple[Network, ...] = (),
        protocols: Mapping[str, ErrorHandler] | None = None,
    ) -> None:
        self.app = app
        #: Refusals under a protocol's mount are in its error format (``middleware.send_error``).
        self.protocols = dict(protocols or {})
        self.hosts = hosts
        self.networks = networks
        self.cors_origins = cors_origins
        self.host_verdicts: dict[bytes, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope["method"], scope["headers"])
            if refusal is not None:
                await send_error(self.protocols, refusal, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: list[tuple[bytes, bytes]]) -> ClientError | None:
        origins: list[str] = []
        host: str | None = None
        cross_site = False
        for name, value in headers:
            if name == b"host":
                host = value.decode("latin-1")
                if self.hosts is not None and not self.allows(value):  # each one: a second must not slip past
                    return host_refusal(host)
            elif name == b"origin":
                origins.append(value.decode("latin-1"))
            elif name == b"sec-fetch-site":
                cross_site = value == b"cross-site"
        if self.cors_origins is None or method in SAFE_METHODS:
            return None
        for origin in origins:
            if origin not in self.cors_origins and not same_origin(origin, host):
                return Forbidden(
                    f"cross-site request refused: origin {quoted(origin, SHOWN)} is not this server's own and not "
                    "allowed by --cors-origins (STEVEDORE_CORS_ORIGINS)"
                )
        if not origins and cross_site:
            return Forbidden(
                "cross-site request refused: the browser says another site's page sent it (Sec-Fetch-Site: "
                "cross-site) and names no origin --cors-origins (STEVEDORE_CORS_ORIGINS) could allow"
            )
        return None

    def allows(self, raw: bytes) -> bool:
        """An allowed name, or an address of an allowed network (no page can rebind an address: it has no name)."""
        verdict = self.host_verdicts.get(raw)
        if verdict is None:
            name = host_name(raw.decode("latin-1"))
            hosts = self.hosts or frozenset()
            verdict = name is not None and (name in hosts or in_networks(name, self.networks))
            if len(self.host_verdicts) >= KEPT_VERDICTS:  # a client sending ever new values gets no more memory
                self.host_verdicts.clear()
            self.host_verdicts[raw] = verdict
        return verdict


def host_refusal(host: str) -> BadRequest:
    return BadRequest(
        f"host {quoted(host, SHOWN)} is not allowed: a web page may have pointed its own name at this server (DNS "
        "rebinding). Reach the server by an allowed name, or allow this one with --allowed-hosts "
        "(STEVEDORE_ALLOWED_HOSTS)"
    )
