"""``[traffic.NAME]`` tables: names clients call like a model, whose requests go to versions by weight.

    [traffic.wine]
    split = [{ model = "wine:1.0.0", weight = 90 }, { model = "wine:2.0.0", weight = 10 }]
    sticky = "header:X-User"        # or "pointer:/0/0": the same key, the same variant
    shadow = "wine:2.0.0"           # a copy of each request, compared with the live answer, never returned
    shadow_share = 0.25             # the share of the requests copied to the shadow (default 1: every one)
    tolerance = 1e-6                # numbers compared within it (or { rel = 1e-6, abs = 1e-9 }); default exact

``read_traffic`` checks the tables' shape and keeps them as plain, normalised
tables in ``Settings.traffic`` (``Settings.document()`` carries them as they
are); ``traffic_of`` parses one into the ``Traffic`` the core routes by. A
wrong table is a ``SettingError`` naming ``traffic.NAME...`` and the file.
What needs the models (a variant no model provides, a traffic name that is a
model's) is checked by ``core.traffic`` once they are loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stevedore_server.base.errors import SettingError, TrafficProblem

KEYS = frozenset({"split", "sticky", "shadow", "shadow_share", "tolerance", "description"})
STICKY_KINDS = ("header", "pointer")


@dataclass(frozen=True)
class Target:
    """A model by name and version (None: its default version), as ``"name"`` or ``"name:version"`` says."""

    name: str
    version: str | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Variant:
    """One of a split's models and its weight (a share of the total)."""

    target: Target
    weight: float

    def as_table(self) -> dict[str, Any]:
        return {"model": str(self.target), "weight": self.weight}


@dataclass(frozen=True)
class Sticky:
    """Where a request's key is: a header's value (``header:X-User``) or a JSON pointer into its body."""

    kind: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True)
class Tolerance:
    """How close two numbers must be to be equal (``math.isclose``); zero and zero: exactly equal."""

    rel: float = 0.0
    abs: float = 0.0

    def as_table(self) -> dict[str, float]:
        return {"rel": self.rel, "abs": self.abs}


@dataclass(frozen=True)
class Traffic:
    """One ``[traffic.NAME]`` table, parsed."""

    name: str
    split: tuple[Variant, ...]
    sticky: Sticky | None = None
    shadow: Target | None = None
    #: The share of the requests (in (0, 1]) copied to the shadow, drawn at random.
    shadow_share: float = 1.0
    tolerance: Tolerance = Tolerance()
    description: str = ""


def read_traffic(where: str, tables: Any) -> dict[str, Any]:
    """The traffic tables of ``tables`` (the file's ``traffic`` table), checked for their shape and normalised."""
    if not isinstance(tables, dict) or not all(isinstance(table, dict) for table in tables.values()):
        raise SettingError("traffic", "must be [traffic.NAME] tables", f"in {where}")
    read = {}
    for name, table in tables.items():
        try:
            read[name] = normalised(traffic_of(name, table))
        except TrafficProblem as problem:
            setting, _, message = str(problem).partition(": ")
            raise SettingError(f"traffic.{name}.{setting}", message, f"in {where}, table [traffic.{name}]") from None
    return read


def normalised(traffic: Traffic) -> dict[str, Any]:
    """``traffic`` as a plain table of the TOML's shape (what ``traffic_of`` reads back)."""
    table: dict[str, Any] = {"split": [variant.as_table() for variant in traffic.split]}
    if traffic.sticky is not None:
        table["sticky"] = str(traffic.sticky)
    if traffic.shadow is not None:
        table["shadow"] = str(traffic.shadow)
    if traffic.shadow_share != 1.0:
        table["shadow_share"] = traffic.shadow_share
    if traffic.tolerance != Tolerance():
        table["tolerance"] = traffic.tolerance.as_table()
    if traffic.description:
        table["description"] = traffic.description
    return table


def traffic_of(name: str, table: dict[str, Any]) -> Traffic:
    """A table parsed; ``TrafficProblem`` as "KEY: what is wrong" otherwise."""
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise TrafficProblem(f"{unknown[0]}: no such key (a traffic table has {', '.join(sorted(KEYS))})")
    if "split" not in table:
        raise TrafficProblem("split: missing: the models and their weights, [{ model = ..., weight = ... }, ...]")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise TrafficProblem("description: must be a string")
    return Traffic(
        name,
        split_of(table["split"]),
        sticky_of(table.get("sticky")),
        None if table.get("shadow") is None else target_of("shadow", table["shadow"]),
        share_of(table.get("shadow_share", 1.0)),
        tolerance_of(table.get("tolerance")),
        description,
    )


def split_of(value: Any) -> tuple[Variant, ...]:
    """A split (the TOML's, or a ``PUT /traffic/NAME`` body's): at least one model, each once, weights numbers of
    zero or more, at least one above zero."""
    if not isinstance(value, list) or not value:
        raise TrafficProblem("split: must be a non-empty list of { model = ..., weight = ... }")
    variants = tuple(variant_of(index, entry) for index, entry in enumerate(value))
    seen: set[Target] = set()  # a set: a long split (a PUT body) is checked in linear time
    for variant in variants:
        if variant.target in seen:
            raise TrafficProblem(f"split: model {str(variant.target)!r} is listed twice")
        seen.add(variant.target)
    if not any(variant.weight > 0 for variant in variants):
        raise TrafficProblem("split: at least one weight must be above zero")
    if not math.isfinite(sum(variant.weight for variant in variants)):
        raise TrafficProblem("split: the weights' sum must be a finite number")
    return variants


def variant_of(index: int, entry: Any) -> Variant:
    where = f"split[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"model", "weight"}:
        raise TrafficProblem(f'{where}: must be {{ model = "NAME[:VERSION]", weight = NUMBER }}, got {entry!r}')
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not finite(weight) or weight < 0:
        raise TrafficProblem(f"{where}.weight: must be a number, finite, of zero or more, got {weight!r:.40}")
    return Variant(target_of(f"{where}.model", entry["model"]), float(weight))


def finite(number: float) -> bool:
    """Whether ``number`` is finite as a float (an int too long for one, as TOML allows, is not)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def target_of(where: str, value: Any) -> Target:
    """``"name"`` or ``"name:version"``."""
    if not isinstance(value, str) or not value.strip():
        raise TrafficProblem(f'{where}: must be a model, "NAME" or "NAME:VERSION", got {value!r}')
    name, colon, version = value.strip().partition(":")
    if not name or (colon and not version):
        raise TrafficProblem(f'{where}: must be a model, "NAME" or "NAME:VERSION", got {value!r}')
    return Target(name, version or None)


def sticky_of(value: Any) -> Sticky | None:
    if value is None:
        return None
    kind, colon, key = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in STICKY_KINDS or not colon or not key:
        raise TrafficProblem(f'sticky: must be "header:NAME" or "pointer:/JSON/POINTER", got {value!r}')
    if kind == "pointer" and not key.startswith("/"):
        raise TrafficProblem(f"sticky: a JSON pointer starts with '/', got {key!r}")
    return Sticky(kind, key.lower() if kind == "header" else key)


def share_of(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise TrafficProblem(f"shadow_share: must be a number above 0 and at most 1, got {value!r}")
    return float(value)


def tolerance_of(value: Any) -> Tolerance:
    """A number (relative and absolute alike) or ``{ rel = ..., abs = ... }``; none: exact."""
    if value is None:
        return Tolerance()
    if isinstance(value, dict) and set(value) <= {"rel", "abs"}:
        return Tolerance(tolerance_number("rel", value.get("rel", 0.0)), tolerance_number("abs", value.get("abs", 0.0)))
    number = tolerance_number("", value)
    return Tolerance(number, number)


def tolerance_number(part: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        where = f"tolerance.{part}" if part else "tolerance"
        raise TrafficProblem(f"{where}: must be a number of zero or more, or {{ rel = ..., abs = ... }}, got {value!r}")
    return float(value)
