"""Rendering the console's pages: Jinja2 templates that escape every value, under a strict policy.

Every string a plugin gives (names, descriptions, metadata, schema titles,
reasons, errors) reaches a page through a template with autoescaping on, so a
plugin cannot write markup into it; the Content-Security-Policy lets the page run
this host's scripts only, and no inline script at all.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson
from starlette.responses import HTMLResponse

from stevedore_server.frontends.web import docs

if TYPE_CHECKING:
    import jinja2

#: Where the console's own and vendored files are served, and the package data directory holding them.
ASSETS_PATH = "/console/assets"
ASSETS_PACKAGE, ASSETS_DIRECTORY = "stevedore_server.frontends.console", "static"
ASSETS = {
    "pico": "vendor/pico.classless.min.css",
    "htmx": "vendor/htmx.min.js",
    "style": "console.css",
    "script": "console.js",
    "icon": "favicon.svg",
}
#: No inline script, and no page may frame the console (its buttons load and unload models).
POLICY = docs.content_security_policy(frame_ancestors="'none'")
#: Schemes a plugin's home page may have to be shown as a link.
LINK_SCHEMES = ("http", "https")


@functools.cache
def environment() -> jinja2.Environment:
    """The templates' environment, made with the first page: a server nobody opens the console of never imports
    Jinja2."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(ASSETS_PACKAGE, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {
        "duration": duration, "pretty": pretty, "payload": payload, "compact": compact, "json": as_json,
        "segment": segment,
    }  # fmt: skip
    env.tests["link"] = is_link
    env.globals["assets"] = {role: asset_url(name) for role, name in ASSETS.items()}
    return env


def render(template: str, **context: Any) -> HTMLResponse:
    """A page or fragment, with the console's policy."""
    body = environment().get_template(template).render(**context)
    return docs.Page(body, POLICY).response()


def asset_url(name: str) -> str:
    """The path of a console file on this host, with the hash of its content (cached for a year)."""
    return f"{ASSETS_PATH}/{name}?v={docs.fingerprint(name, ASSETS_DIRECTORY, ASSETS_PACKAGE)}"


def segment(value: Any) -> str:
    """A value as one segment of a URL path."""
    return quote(str(value), safe="")


def is_link(value: Any) -> bool:
    """Whether a plugin's value may be shown as a link: a web address, never ``javascript:`` or ``data:``."""
    return isinstance(value, str) and urlsplit(value.strip()).scheme.lower() in LINK_SCHEMES


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()


def payload(value: Any) -> str:
    """A payload as JSON to edit: a list of rows one row a line, a list of scalars on one line, anything else
    indented (as console.js writes a payload or result)."""
    if not isinstance(value, list) or not value:
        return pretty(value)
    if not any(isinstance(item, (list, dict)) for item in value):
        return as_json(value)
    return "[\n  " + ",\n  ".join(as_json(item) for item in value) + "\n]"


def as_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def compact(value: Any) -> str:
    """A plain string as it is, nothing for None, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else as_json(value)


def duration(seconds: float) -> str:
    """The two largest units: ``3 d 2 h``, ``2 h 0 min``, ``4 min 3 s``, ``12 s``."""
    remaining, parts = int(seconds), list[str]()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count or parts:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2]) or "0 s"
