"""The hook markers and every hook specification of stevedore-server.

Plugins implement hooks with ``@stevedore_server.hookimpl`` and expose the
module or object holding them through the ``stevedore.hooks`` entry-point group.
An implementation may take fewer arguments than its specification names (pluggy
passes only those it asks for), so hooks gain arguments without breaking the
plugins written before: ``stevedore_health_checks()`` still works.
The server calls hooks only through ``plugins.hooks.Hooks``; the ``server`` a hook is handed is
described by ``plugins.host.Server`` (its settings, its models, ``source_of``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from stevedore_server.base.health import HealthCheck
from stevedore_server.base.inference_records import InferenceRecord

if TYPE_CHECKING:
    from stevedore_server.plugins.host import Server

    from .predictor import Predictor

PROJECT = "stevedore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "HealthCheck", "InferenceRecord", "hookimpl", "hookspec"]


@hookspec
def stevedore_health_checks(server: Server) -> Mapping[str, HealthCheck]:
    """Contribute health checks to ``/healthz`` and ``/readyz``.

    Called once at startup, after the models are loaded, with the ``server``
    (its ``settings`` and its ``registry`` of models, which a check should read
    when it runs: models may be replaced while serving). Return a mapping of a
    check name to a callable taking no arguments and returning ``(ok, detail)``.
    The callables run in a worker thread when a probe comes and their last
    results are a second old (at most once a second, one run at a time), so
    keep them cheap; with API keys on, only callers with a key see details.
    A check that raises counts as failed, with the exception as its detail. A
    name given by two plugins is a startup error.
    """


@hookspec
def stevedore_catalogue_metadata(predictor: Predictor, server: Server) -> dict[str, Any] | None:
    """Add fields to ``predictor``'s catalogue entry, under ``metadata``.

    Called once per predictor at startup, for served and failed predictors alike,
    with the ``server`` (``server.source_of(predictor)`` tells which plugin
    provided it). Return a dict (merged into ``metadata``) or ``None``. Where two
    plugins give the same key, the one called first wins; the built-in fields
    (distribution name, version, author, license, summary, home page) are called
    last, so any plugin can override them.
    """


#: ``register(path, endpoint, methods=("GET",), model=None)``: one route of a plugin (``stevedore_routes``).
RegisterRoute = Callable[..., None]


@hookspec
def stevedore_routes(server: Server, register: RegisterRoute) -> None:
    """Add HTTP routes of the plugin's own, under one of its models or under its distribution.

    Called once at startup, after the models are loaded and the health checks
    gathered, with the ``server``. Call ``register(path, endpoint,
    methods=("GET",), model=None, scope="infer")`` for each route: ``path`` starts with ``/``
    and may hold Starlette path parameters (``/items/{item_id:int}``); with
    ``model="NAME"`` (a model of the plugin's own distribution) the route is
    served at ``/models/NAME{path}``, without it at
    ``/plugins/DISTRIBUTION{path}``. ``endpoint`` is a Starlette endpoint: it
    takes the ``Request`` and returns a ``Response``; an ``async def`` runs on
    the event loop, a plain function in a worker thread. The routes pass
    through every middleware (API keys, limits, request ids, access log,
    metrics) and are in ``/openapi.json``; with API keys on, a caller's key
    must hold ``scope`` (``"infer"``, ``"train"`` or ``"admin"``: name the
    narrowest that fits a route that changes state). A route that would shadow a built-in
    route or another plugin's is a startup error naming both. Returns nothing;
    if the implementation raises, or registers what cannot be a route, the
    plugin is reported as failed and none of its routes is served.
    """


@hookspec
def stevedore_register_predictors(register: Callable[[Predictor], None]) -> None:
    """Contribute predictors without the ``stevedore.predictors`` entry-point group.

    Called once at startup, before the models are loaded. Call
    ``register(predictor)`` for each Predictor instance the plugin provides; the
    predictors are then loaded, self-tested and served like entry-point ones.
    Returns nothing; if the implementation raises, the plugin is reported as
    failed and the predictors it registered are dropped.
    """


@hookspec
def stevedore_inference_logged(record: InferenceRecord, server: Server, more: bool) -> None:
    """Receive one inference of the payload log: its request and response, after the answer was sent.

    Called once per inference the payload log records (``payload_log_sample``
    of them, not those of a model with ``[models.NAME] payload_log = false``),
    with the ``record`` (an ``InferenceRecord``: request id, model, version,
    route, protocol, status, times, and the request and response bodies as
    JSON values, ``payload_log_redact`` fields already redacted; which bodies
    it holds, ``record.recorded``, follows ``payload_log_mode``) and the
    ``server``. Implementing this hook turns the payload log on even without
    a ``payload_log`` sink; the built-in sinks (CloudEvents over HTTP, JSON
    lines) are an implementation of it, called last. Records come one at a
    time, in the order answered, from one thread of their own, never on the
    request path, a few at once: ``more`` (an argument to take only if
    wanted) is True when another record follows at once, so an
    implementation may hold this one and write it with the next ones (the
    JSON lines sink writes what it holds when ``more`` is False: one write
    for many records). A slow implementation delays the records after it,
    and once the payload log's queue is full, records are dropped and counted
    (``stevedore_payload_log_dropped_total``), never a request slowed. Returns
    nothing; an implementation that raises has the record counted as dropped
    (reason ``sink_error``), its first failure logged, and the others still
    receive it.
    """
