"""Traffic between versions: names clients call like a model (``[traffic.NAME]``), each request sent to one of
its variants by weight, optionally sticky, optionally copied to a shadow.

``Inference`` routes a call of a traffic name here (``TrafficRouter.choose``)
before it finds a model, so every front end (the stevedore and original routes,
V2 REST and gRPC, streams) and every pipeline step gets it. The chosen
variant answers as itself: its own name and version in the answer, its own
validation, admission, batching and metrics; the router counts the call in
``stevedore_traffic_requests_total{traffic,model,version}``.

- Weighted: a uniform draw over the weights. Sticky (``header:X-User``,
  ``pointer:/0/0``): the key's blake2b hash is the draw, so a key lands on
  the same variant in every worker and after a restart, while the weights
  stay; a request without the key is drawn at random.
- Shadow: after the live answer, a copy of a predict goes to the shadow
  model in a task of its own (a fresh context: none of the request's
  deadline, timing or span), its answer compared with the live one
  (``equal`` within the table's tolerance, or ``different``; ``failed`` if
  its call failed) and counted in
  ``stevedore_shadow_comparisons_total{traffic,live,shadow,outcome}``; never
  returned. A copy runs only once no request is being answered (it waits at
  most ``SHADOW_PATIENCE``), so the shadow takes no capacity from live
  requests. At most ``MAX_PENDING_SHADOWS`` wait at once: beyond, a copy is
  dropped and counted ``dropped`` (so is one that found no idle moment, and
  one the shadow's own bound refuses, ``Overloaded``), so a slow shadow never
  holds the live path.
- A traffic name that is a model's name, or whose variants name a traffic
  name, is listed as failed with its reason and not routed (``--strict``: the
  server does not start).

Weights change while serving (``set_split``: ``PUT /traffic/NAME``; with
``--workers N`` through ``traffic_sharing``) and when the settings file is
read again (``reload``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import copy
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stevedore_server.base.errors import (
    SHOWN_NAME,
    InvalidSplit,
    Overloaded,
    StartupError,
    UnknownModel,
    quoted,
    unknown_name,
)
from stevedore_server.base.metrics import Metrics
from stevedore_server.base.serialization import loads
from stevedore_server.base.settings.traffic import Target, Traffic, Variant, traffic_of

from .inference import Action, Answer, Inference, JSONText, JSONValue, ModelRef, Payload, Tensors
from .served_models import Registry

logger = logging.getLogger("stevedore.traffic")

#: Shadow calls that may wait at once, over every traffic name of a server; a copy beyond is dropped (counted).
MAX_PENDING_SHADOWS = 64
#: Seconds a shadow's copy waits for a moment when no request is being answered: it runs only on capacity the
#: live requests leave (a server kept busy sheds its copies, counted as dropped), so it never slows them.
SHADOW_PATIENCE = 1.0
READY, FAILED = "ready", "failed"

#: The request's headers as (name, value) pairs (raw ASGI ones, or gRPC metadata), for a ``header:`` sticky key:
#: set by the front ends' request context, read only by a sticky traffic name.
request_headers: contextvars.ContextVar[Sequence[tuple[Any, Any]]] = contextvars.ContextVar(
    "stevedore_request_headers", default=()
)


@dataclass(frozen=True)
class Route:
    """A traffic name as served now: its table (with the current split), the split's cumulative weights, and its
    state (``failed``: not routed, ``reason`` says why)."""

    traffic: Traffic
    bounds: tuple[float, ...]
    state: str = READY
    reason: str = ""

    @classmethod
    def of(cls, traffic: Traffic, state: str = READY, reason: str = "") -> Route:
        bounds, total = [], 0.0
        for variant in traffic.split:
            total += variant.weight
            bounds.append(total)
        return cls(traffic, tuple(bounds), state, reason)

    def variant_at(self, position: float) -> Variant:
        """The variant at ``position`` (in [0, 1)) of the weights laid end to end."""
        index = bisect.bisect_right(self.bounds, position * self.bounds[-1])
        return self.traffic.split[min(index, len(self.bounds) - 1)]

    def heaviest(self) -> Variant:
        return max(self.traffic.split, key=lambda variant: variant.weight)

    def describe(self, registry: Registry) -> dict[str, Any]:
        """What ``GET /traffic/NAME`` answers: its split as served, its sticky key and shadow, its state, and the
        variants no model serves now."""
        traffic = self.traffic
        targets = [variant.target for variant in traffic.split]
        if traffic.shadow is not None:
            targets.append(traffic.shadow)
        return {
            "name": traffic.name,
            "split": [variant.as_table() for variant in traffic.split],
            "sticky": None if traffic.sticky is None else str(traffic.sticky),
            "shadow": None if traffic.shadow is None else str(traffic.shadow),
            "shadow_share": traffic.shadow_share,
            "tolerance": traffic.tolerance.as_table(),
            "description": traffic.description,
            "state": self.state,
            "reason": self.reason,
            "missing": [str(target) for target in targets if not serves(registry, target)],
        }


def serves(registry: Registry, target: Target) -> bool:
    versions = registry.versions_of(target.name)
    return bool(versions) and (target.version is None or any(m.version == target.version for m in versions))


class TrafficRouter:
    """Every traffic name of a server, routed for ``Inference`` (see the module's docstring)."""

    def __init__(self, inference: Inference, registry: Registry, metrics: Metrics, max_json_depth: int) -> None:
        self.inference = inference
        self.registry = registry
        self.metrics = metrics
        self.max_json_depth = max_json_depth
        #: Every traffic name (failed ones too), replaced whole on a change.
        self.entries: Mapping[str, Route] = {}
        #: The names routed now: those not failed.
        self.routed: frozenset[str] = frozenset()
        self.pending: set[asyncio.Task[None]] = set()
        self.counted: dict[tuple[str, str, str], Any] = {}
        self.failures_logged: set[str] = set()
        #: Applies a split on every worker (``traffic_convergence``); None: in this process only.
        self.changer: Callable[[str, tuple[Variant, ...]], Awaitable[Route]] | None = None
        #: Each name's split as the settings file has it (``configure``), which a split put while serving replaces.
        self.file_splits: dict[str, tuple[Variant, ...]] = {}

    # -- configuration -----------------------------------------------------------------------------------------

    def configure(self, tables: Mapping[str, Any], strict: bool = False) -> None:
        """Serve the traffic ``tables`` (``Settings.traffic``, checked for their shape), replacing any before;
        a table failing its check against the models is listed as failed (``--strict``: a ``StartupError``)."""
        names = set(tables)
        entries = {name: self.checked(traffic_of(name, table), names) for name, table in tables.items()}
        failed = [f"traffic {name}: {route.reason}" for name, route in entries.items() if route.state == FAILED]
        if failed and strict:
            raise StartupError("--strict: not every traffic name can be served:\n  " + "\n  ".join(failed))
        for problem in failed:
            logger.error("%s", problem)
        self.publish(entries)
        self.file_splits = {name: route.traffic.split for name, route in entries.items()}

    def reload(self, tables: Mapping[str, Any]) -> None:
        """Serve the traffic tables of the settings file read again (SIGHUP): names added, removed, changed; a
        split changed while serving gives way to the file's where the file changed it, and stays where the file
        did not (as a worker restarted by SIGHUP under ``--workers N`` keeps it: ``traffic_convergence``)."""
        before = self.file_splits
        put = {
            name: route.traffic.split for name, route in self.entries.items() if route.traffic.split != before.get(name)
        }
        self.configure(tables)
        for name, split in put.items():
            if name in self.entries and self.file_splits[name] == before.get(name):
                self.set_split(name, split)
        logger.info("traffic names read again: %s", ", ".join(sorted(tables)) or "none")

    def checked(self, traffic: Traffic, traffic_names: Iterable[str]) -> Route:
        """The route of ``traffic``, failed where it cannot be served."""
        names = {name for name in traffic_names if not self.registry.versions_of(name)}  # a model's name: the model
        if self.registry.versions_of(traffic.name):
            return Route.of(traffic, FAILED, f"{traffic.name!r} is a model's name: the model keeps it")
        targets = [variant.target for variant in traffic.split]
        targets += [traffic.shadow] if traffic.shadow is not None else []
        looped = sorted({target.name for target in targets if target.name in names})
        if looped:
            return Route.of(traffic, FAILED, f"its models name traffic names ({', '.join(looped)}), not models")
        missing = [str(target) for target in targets if not serves(self.registry, target)]
        if missing:  # a model may be loaded later (the repository): routed, its calls fail until then
            logger.warning("traffic %s: no model serves %s yet", traffic.name, ", ".join(missing))
        return Route.of(traffic)

    def publish(self, entries: Mapping[str, Route]) -> None:
        """Route ``entries`` from now on (one assignment each: a request sees the old routes or the new)."""
        self.entries = dict(entries)
        self.routed = frozenset(name for name, route in entries.items() if route.state == READY)
        # Without traffic names, the inference core asks nothing more of a request than before they existed.
        self.inference.router = self if self.entries else None

    async def change_split(self, name: str, split: tuple[Variant, ...]) -> Route:
        """``PUT /traffic/NAME``: route ``name`` by ``split`` from now on, in every worker of the run; UnknownModel
        (404) for a name that is no traffic name, InvalidSplit (400) for a split it could not route (a variant
        naming a traffic name, or no model, where the file's table would be listed as failed or warned about)."""
        changed = self.checked(replace(self.entry(name).traffic, split=split), self.entries)
        if changed.state == FAILED:  # applied, it would stop routing the name: its clients would get 404s
            raise InvalidSplit(f"traffic {name!r}: {changed.reason}")
        missing = [str(v.target) for v in split if v.weight > 0 and not serves(self.registry, v.target)]
        if missing:  # a typo would send a share of the live requests to errors
            raise InvalidSplit(f"traffic {name!r}: no model serves {', '.join(missing)}")
        if self.changer is None:
            return self.set_split(name, split)
        return await self.changer(name, split)

    def set_split(self, name: str, split: tuple[Variant, ...]) -> Route:
        """Route ``name`` by ``split`` from now on, in this process; UnknownModel (404) for a name that is no
        traffic name."""
        route = self.entry(name)
        changed = self.checked(replace(route.traffic, split=split), self.entries)
        self.publish({**self.entries, name: changed})
        logger.info("traffic %s split now %s", name, ", ".join(f"{v.target} {v.weight:g}" for v in split))
        return changed

    def entry(self, name: str) -> Route:
        route = self.entries.get(name)
        if route is None:
            raise UnknownModel(
                f"no traffic named {quoted(name, SHOWN_NAME)}", unknown_name(name, self.entries, "traffic")
            )
        return route

    # -- routing -----------------------------------------------------------------------------------------------

    def routes(self, ref: ModelRef) -> bool:
        """Whether ``ref`` names a traffic name (a version given names a model's version: never routed)."""
        return ref.version is None and ref.name in self.routed

    def representative(self, name: str) -> ModelRef:
        """The variant that stands for ``name`` before a request's body is read (its admission, its tensors):
        the heaviest."""
        return as_ref(self.entries[name].heaviest().target)

    def choose(self, name: str, payload: Payload) -> tuple[ModelRef, Payload]:
        """The variant a request of ``name`` goes to, and its payload (parsed, where a sticky pointer read it)."""
        route = self.entries[name]
        sticky = route.traffic.sticky
        key: str | None = None
        if sticky is not None and sticky.kind == "header":
            key = header_value(sticky.key)
        elif sticky is not None:
            if isinstance(payload, JSONText):
                payload = JSONValue(loads(payload.body, self.max_json_depth), len(payload.body))
            key = pointer_key(payload, sticky.key)
        position = random.random() if key is None else hashed(key)  # a split, not a secret
        return as_ref(route.variant_at(position).target), payload

    def kept(self, name: str, action: Action, payload: Payload) -> Payload | None:
        """The payload the shadow of ``name`` will get for this request, copied before the live variant sees it (a
        predictor may change its input in place: the shadow must get what the client sent); None: no shadow."""
        traffic = self.entries[name].traffic
        if traffic.shadow is None or action is not Action.PREDICT:
            return None
        if traffic.shadow_share < 1.0 and random.random() >= traffic.shadow_share:  # a sample, not a secret
            return None
        return copied(payload)

    def answered(self, name: str, answer: Answer, action: Action, payload: Payload | None) -> None:
        """Count the variant that answered ``name``; ``payload`` (``kept``), if any, goes to the shadow."""
        model = answer.model
        key = (name, model.name, model.version)
        counter = self.counted.get(key)
        if counter is None:  # looking children up by labels costs more than counting
            counter = self.counted[key] = self.metrics.traffic_requests.labels(*key)
        counter.inc()
        shadow = self.entries[name].traffic.shadow if name in self.entries else None  # SIGHUP may have removed it
        if payload is None or shadow is None or is_target(model.name, model.version, shadow):
            return
        live = f"{model.name}:{model.version}"
        if len(self.pending) >= MAX_PENDING_SHADOWS:
            self.metrics.shadow_comparisons.labels(name, live, str(shadow), "dropped").inc()
            return
        # A context of its own: the request's deadline, timing and span are not the shadow's.
        task = asyncio.create_task(self.shadowed(name, answer, shadow, payload), context=contextvars.Context())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def shadowed(self, name: str, live: Answer, shadow: Target, payload: Payload) -> None:
        """Run the shadow on ``payload`` and count how its answer compares with the live one."""
        tolerance = self.entries[name].traffic.tolerance if name in self.entries else None
        live_label = f"{live.model.name}:{live.model.version}"
        if not await self.inference.idle(SHADOW_PATIENCE):  # the live requests kept the server busy: shed
            self.metrics.shadow_comparisons.labels(name, live_label, str(shadow), "dropped").inc()
            return
        try:
            answer = await self.inference.call(as_ref(shadow), Action.PREDICT, payload)
        except Overloaded:  # the shadow's own bound is full: a copy it had no room for, as one beyond ours
            self.metrics.shadow_comparisons.labels(name, live_label, str(shadow), "dropped").inc()
            return
        except Exception as error:  # any failure of the shadow is counted, never the client's
            self.log_shadow_failure(name, shadow, error)
            self.metrics.shadow_comparisons.labels(name, live_label, str(shadow), "failed").inc()
            return
        equal = tolerance is not None and same(live.result, answer.result, tolerance.rel, tolerance.abs)
        outcome = "equal" if equal else "different"
        # The shadow as the table names it, whatever the outcome: one series a traffic name and outcome.
        self.metrics.shadow_comparisons.labels(name, live_label, str(shadow), outcome).inc()

    def log_shadow_failure(self, name: str, shadow: Target, error: Exception) -> None:
        """The first failure of a traffic name's shadow as a warning, the next ones at debug level: they are
        counted, and a failing shadow would fill the log at the live traffic's rate."""
        level = logging.DEBUG if name in self.failures_logged else logging.WARNING
        self.failures_logged.add(name)
        logger.log(level, "traffic %s: shadow %s failed (counted; next ones at debug level): %s", name, shadow, error)

    def describe(self) -> list[dict[str, Any]]:
        return [route.describe(self.registry) for route in self.entries.values()]

    def close(self) -> None:
        """At shutdown: the shadow calls still pending are cancelled (nobody waits for them)."""
        for task in list(self.pending):
            task.cancel()


def copied(payload: Payload) -> Payload:
    """A copy of ``payload`` nothing done to the original changes (a JSON text, immutable bytes, as it is)."""
    if isinstance(payload, JSONValue):
        return JSONValue(copy.deepcopy(payload.value), payload.size)
    if isinstance(payload, Tensors):
        return replace(payload, arrays={name: array.copy() for name, array in payload.arrays.items()})
    return payload


def as_ref(target: Target) -> ModelRef:
    return ModelRef(target.name, target.version)


def is_target(name: str, version: str, target: Target) -> bool:
    return name == target.name and (target.version is None or target.version == version)


def hashed(key: str) -> float:
    """A key's place in [0, 1): blake2b, the same in every process and every run (``hash`` is salted)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def header_value(name: str) -> str | None:
    """The request's header ``name`` (lower case), from ``request_headers``; None if it has none."""
    for key, value in request_headers.get():
        text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        if text.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def pointer_key(payload: Payload, pointer: str) -> str | None:
    """The value at JSON ``pointer`` in the payload, as a key; None where there is none."""
    if isinstance(payload, Tensors):
        arrays = list(payload.arrays.values())
        document: Any = arrays[0] if len(arrays) == 1 else payload.arrays
    elif isinstance(payload, JSONValue):
        document = payload.value
    else:
        return None
    for token in pointer.split("/")[1:]:
        document = step(document, token.replace("~1", "/").replace("~0", "~"))
        if document is None:
            return None
    return str(document.tolist() if isinstance(document, (np.ndarray, np.generic)) else document)


def step(document: Any, token: str) -> Any:
    """``document[token]`` as a JSON pointer reads it; None where there is no such member."""
    if isinstance(document, dict):
        return document.get(token)
    if isinstance(document, (list, tuple, np.ndarray)) and token.isdigit() and int(token) < len(document):
        return document[int(token)]
    return None


def same(live: Any, shadow: Any, rel: float = 0.0, absolute: float = 0.0) -> bool:
    """Whether two answers are equal: numbers within the tolerance (``math.isclose``; zero: exactly), arrays
    and lists member by member, mappings key by key."""
    if isinstance(live, (np.ndarray, np.generic)):
        live = live.tolist()
    if isinstance(shadow, (np.ndarray, np.generic)):
        shadow = shadow.tolist()
    if isinstance(live, dict) and isinstance(shadow, dict):
        return live.keys() == shadow.keys() and all(same(live[k], shadow[k], rel, absolute) for k in live)
    if isinstance(live, (list, tuple)) and isinstance(shadow, (list, tuple)):
        return len(live) == len(shadow) and all(same(a, b, rel, absolute) for a, b in zip(live, shadow, strict=True))
    if is_number(live) and is_number(shadow):
        if math.isnan(live) or math.isnan(shadow):
            return math.isnan(live) and math.isnan(shadow)
        return bool(live == shadow) or math.isclose(live, shadow, rel_tol=rel, abs_tol=absolute)
    try:
        return bool(live == shadow)
    except Exception:  # an answer that cannot say (a DataFrame's ambiguous truth): not shown equal
        logger.debug("answers of types %s and %s not comparable", type(live), type(shadow), exc_info=True)
        return False


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
