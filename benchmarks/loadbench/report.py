"""Medians over the rounds, and the table: every figure next to its ratio to the floor and to MLServer.

Throughput is also given as a ratio to MLServer over gRPC, the peer of the
gRPC targets; and lines under the table compare ours over gRPC with MLServer's
gRPC and with our own REST binary tensors, ours on Ray Serve with the
hand-written Ray Serve baselines in every scenario, a model file served through
its runtime with the hand-written plugin, MLServer's folder served by us
with MLServer, and what observing ours costs (tracing, payload logs) against
ours unobserved, where both were measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

from .scenarios import SCENARIOS

Record = dict[str, Any]
MEDIANS = (
    "rps", "rows_per_s", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "peak_rss_mib", "peak_anon_mib", "cpu_us_per_request"
)  # fmt: skip
FLOOR, MLSERVER, MLSERVER_GRPC = "floor", "mlserver", "mlserver-grpc"
#: Issue 25's pairs: a model file through its runtime, and MLServer's folder served by us, against their peers.
MODEL_FILES = (("ours-runtime", "ours-stevedore"), ("ours-runtime-v2", "ours-v2"), ("ours-mlserver", MLSERVER))
#: (scenario, target, compared with): the lines under the table.
COMPARISONS = (
    ("small-c32", "ours-grpc", MLSERVER_GRPC),
    ("batch1000-c4", "ours-grpc", "ours-v2-binary"),
    *((scenario, "ours-ray", base) for scenario in SCENARIOS for base in ("ray-fastapi", "ray-fastapi-65")),
    # Issue 28: both with Serve's throughput-optimized mode, the baseline's queue tuned (at least 1.0x).
    *((scenario, "ours-ray-fast", "ray-fastapi-fast") for scenario in SCENARIOS),
    # A model file through its runtime against the hand-written plugin of the same model (at least 1.0x), and
    # MLServer's own folder served by us against MLServer (at least 3x at small-c32): issue 25.
    *((scenario, target, base) for scenario in ("small-c32", "batch1000-c4") for target, base in MODEL_FILES),
)


@dataclass(frozen=True)
class Cost:
    """What one way of observing ours costs: ``target``'s throughput against ``base``'s, and issue 27's bound."""

    what: str
    target: str
    base: str
    #: The largest loss of req/s allowed, as a fraction.
    bound: float
    #: Where the bound applies (None: every scenario); the others are shown without one.
    scenarios: tuple[str, ...] | None = None


#: Issue 27's bounds: the otel extra installed with tracing off, against the same build without it; tracing on
#: (every span sampled, exported over OTLP gRPC), against tracing off at one row and 32 connections; the payload
#: log to a file, against no payload log.
OBSERVABILITY = (
    Cost("tracing off / no otel extra", "ours-stevedore", "ours-no-otel", 0.02),
    Cost("tracing on (always_on) / off", "ours-tracing", "ours-stevedore", 0.15, ("small-c32",)),
    Cost("payload log to a file / off", "ours-payload-log", "ours-stevedore", 0.10),
)
#: Issue 29's: a traffic name routed in the core, against the model called by its name (no bound); a shadow (a
#: copy of each request to iris-proba, compared off the request path), against the same name without one.
TRAFFIC = (
    Cost("traffic name / the model's name", "ours-traffic", "ours-stevedore", 0.0, ()),
    Cost("shadow on / off", "ours-shadow", "ours-traffic", 0.05, ("small-c32",)),
    Cost("shadow on a tenth of the requests / off", "ours-shadow-tenth", "ours-traffic", 0.0, ()),
)
#: The environment that must lack OpenTelemetry's SDK for the first line to mean anything, and the one that has it.
WITHOUT_OTEL, WITH_OTEL = "ours-no-otel", "ours"


def middle(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(median(present), 3) if present else None


def spread(values: list[float]) -> float | None:
    """How far apart the rounds were: (largest - smallest) / median, in percent."""
    centre = median(values) if values else 0
    return round(100 * (max(values) - min(values)) / centre, 1) if centre else None


def scenario_summaries(records: list[Record]) -> list[Record]:
    """One line per (target, scenario): medians over the rounds, errors summed."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        if record["kind"] == "result":
            groups.setdefault((record["target"], record["scenario"]), []).append(record)
    summaries = []
    for (target, scenario), rounds in groups.items():
        summary = {"kind": "summary", "target": target, "scenario": scenario, "rounds": len(rounds)}
        summary |= {key: middle(r.get(key) for r in rounds) for key in MEDIANS}
        rps_rounds = [r["rps"] for r in rounds]
        summary |= {"errors": sum(r["errors"] for r in rounds), "rps_rounds": rps_rounds}
        summary |= {"rps_spread_pct": spread(rps_rounds), "batching": rounds[0]["batching"], "rows": rounds[0]["rows"]}
        summaries.append(summary)
    return summaries


def target_summaries(records: list[Record], targets: list[str]) -> list[Record]:
    """One line per target: start-up and idle memory (from its starts without batching), install, failures."""
    installs = {r["environment"]: r for r in records if r["kind"] == "install"}
    summaries = []
    for target in targets:
        starts = [r for r in records if r["kind"] == "start" and r["target"] == target and not r["batching"]]
        failures = [r for r in records if r["kind"] == "failure" and r["target"] == target]
        summaries.append(
            {
                "kind": "target",
                "target": target,
                "startup_s": middle(r["startup_s"] for r in starts),
                "idle_rss_mib": middle(r["idle_rss_mib"] for r in starts),
                "idle_anon_mib": middle(r["idle_anon_mib"] for r in starts),
                "installed": any(target in i["targets"] for i in installs.values()),
                "install_s": next((i["install_s"] for i in installs.values() if target in i["targets"]), None),
                "failures": failure_lines(failures),
            }
        )
    return summaries


def failure_lines(failures: list[Record]) -> list[str]:
    """One line per kind of failure, with the first error in full and the rounds it happened in."""
    kinds: dict[str, list[Record]] = {}
    for failure in failures:
        scenarios = f" [{', '.join(failure['scenarios'])}]" if failure.get("scenarios") else ""
        kinds.setdefault(f"{failure['stage']} failed{scenarios}", []).append(failure)
    lines = []
    for kind, found in kinds.items():
        rounds = [str(f["round"]) for f in found if "round" in f]
        where = f" (round {', '.join(rounds)})" if rounds else ""
        lines.append(f"{kind}{where}: {found[0]['error']}")
    return lines


# -- the table ------------------------------------------------------------------


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


class Columns:
    """Fixed-width text columns: a header line, a rule, then rows."""

    def __init__(self, spec: list[tuple[str, int]]) -> None:
        self.spec = spec

    def line(self, cells: list[str]) -> str:
        first, *rest = zip(cells, self.spec, strict=True)
        text = first[0].ljust(first[1][1])
        return (text + "".join(cell.rjust(width) for cell, (_, width) in rest)).rstrip()

    def header(self) -> list[str]:
        top = self.line([name for name, _ in self.spec])
        return [top, "-" * len(top)]


SCENARIO_COLUMNS = Columns(
    [("target", 16), ("req/s", 9), ("spread", 7), ("rows/s", 11), ("xfloor", 7), ("xmlsrv", 7), ("xmlgrpc", 8),
     ("mean ms", 8), ("p50 ms", 9), ("xfloor", 7), ("xmlsrv", 7), ("p99 ms", 9), ("xfloor", 7), ("xmlsrv", 7),
     ("errors", 8), ("peak RSS", 10), ("xfloor", 7), ("xmlsrv", 7)]
)  # fmt: skip
TARGET_COLUMNS = Columns(
    [("target", 16), ("startup s", 10), ("xfloor", 7), ("xmlsrv", 7), ("idle RSS", 10), ("xfloor", 7),
     ("xmlsrv", 7), ("anon", 8), ("install s", 10), ("  status", 0)]
)  # fmt: skip


def with_ratios(row: Record, key: str, digits: int, bases: list[Record | None]) -> list[str]:
    return [number(row.get(key), digits)] + [ratio(row.get(key), of(base, key)) for base in bases]


def of(base: Record | None, key: str) -> float | None:
    return None if base is None else base.get(key)


def scenario_block(scenario: str, rows: list[Record]) -> list[str]:
    by_target = {row["target"]: row for row in rows}
    bases = [by_target.get(FLOOR), by_target.get(MLSERVER)]
    spec = SCENARIOS[scenario]
    lines = [f"{scenario}: {spec.connections} connection(s), {'1 row' if spec.size == 'small' else '1000 rows'}"
             " a request" + ("; ours with adaptive batching on" if spec.batching else "")]  # fmt: skip
    lines += SCENARIO_COLUMNS.header()
    for row in rows:
        throughput = [number(row["rps"], 1), percent(row["rps_spread_pct"]), number(row["rows_per_s"], 0)]
        throughput += [ratio(row["rps"], of(base, "rps")) for base in [*bases, by_target.get(MLSERVER_GRPC)]]
        cells = [row["target"], *throughput, number(row.get("mean_ms"), 2), *with_ratios(row, "p50_ms", 2, bases)]
        cells += [
            *with_ratios(row, "p99_ms", 2, bases),
            str(row["errors"]),
            *with_ratios(row, "peak_rss_mib", 1, bases),
        ]
        lines.append(SCENARIO_COLUMNS.line(cells))
    return lines


def target_block(rows: list[Record]) -> list[str]:
    by_target = {row["target"]: row for row in rows}
    bases = [by_target.get(FLOOR), by_target.get(MLSERVER)]
    lines = [
        "per target: start-up to ready, idle memory (medians over the starts), install time",
        *TARGET_COLUMNS.header(),
    ]
    for row in rows:
        status = "ok" if not row["failures"] else "; ".join(row["failures"])
        cells = [row["target"], *with_ratios(row, "startup_s", 2, bases), *with_ratios(row, "idle_rss_mib", 1, bases)]
        cells += [number(row["idle_anon_mib"], 1), install_cell(row)]
        lines.append(TARGET_COLUMNS.line([*cells, "  " + status]))
    return lines


def install_cell(row: Record) -> str:
    if row["install_s"] is not None:
        return number(row["install_s"], 0)
    return "cached" if row["installed"] else "-"


def comparison_lines(scenario_rows: list[Record]) -> list[str]:
    """Ours over gRPC against MLServer's gRPC at 32 connections and our REST binary at 1000 rows; ours on Ray
    Serve against the hand-written Ray Serve application; a model file against its hand-written plugin, and
    MLServer's folder served by us against MLServer."""
    rps = {(r["scenario"], r["target"]): r["rps"] for r in scenario_rows}
    lines = []
    for scenario, target, base in COMPARISONS:
        mine, theirs = rps.get((scenario, target)), rps.get((scenario, base))
        if mine is not None and theirs is not None:
            lines.append(
                f"{scenario}: {target} {number(mine, 1)} req/s, {base} {number(theirs, 1)} req/s: "
                f"{ratio(mine, theirs)}x"
            )
    return ["compared (median req/s):", *(f"  {line}" for line in lines), ""] if lines else []


def observability_lines(scenario_rows: list[Record]) -> list[str]:
    """Each way of observing ours against its baseline, per scenario where both ran: req/s and mean latency
    ratios, the rounds' spreads (a ratio closer to 1 than the spreads is within the noise), and the bound."""
    by_key = {(r["scenario"], r["target"]): r for r in scenario_rows}
    lines = []
    for scenario in SCENARIOS:
        for cost in (*OBSERVABILITY, *TRAFFIC):
            mine, base = by_key.get((scenario, cost.target)), by_key.get((scenario, cost.base))
            if mine is not None and base is not None:
                lines.append(f"{scenario}: {cost_line(cost, scenario, mine, base)}")
    if not lines:
        return []
    title = "observability (issue 27) and traffic (issue 29), median req/s against the baseline:"
    return [title, *(f"  {line}" for line in lines), ""]


def cost_line(cost: Cost, scenario: str, mine: Record, base: Record) -> str:
    throughput = mine["rps"] / base["rps"] if base["rps"] else 0.0
    spreads = f"spreads {percent(mine['rps_spread_pct'])}, {percent(base['rps_spread_pct'])}"
    latency = ratio(mine["mean_ms"], base["mean_ms"])
    cpu_mine, cpu_base = (number(row.get("cpu_us_per_request"), 0) for row in (mine, base))
    cpu = f"server CPU {cpu_mine} / {cpu_base} µs a request"
    text = (
        f"{cost.what}: {cost.target} {number(mine['rps'], 1)} / {cost.base} {number(base['rps'], 1)} req/s = "
        f"{throughput:.3f}x ({100 * (1 - throughput):+.1f}% cost; mean latency {latency}x; {cpu}; {spreads})"
    )
    if cost.scenarios is not None and scenario not in cost.scenarios:
        return text
    verdict = "within" if throughput >= 1 - cost.bound else "OVER"
    return f"{text}: {verdict} the bound of {100 * cost.bound:.0f}%"


def environment_check(records: list[Record]) -> list[str]:
    """Whether OpenTelemetry's SDK is where it should be: absent from ours-no-otel, present in ours."""
    lines = []
    for record in records:
        if record["kind"] == "versions" and record["environment"] in (WITHOUT_OTEL, WITH_OTEL):
            found = record["versions"].get("opentelemetry-sdk")
            expected = record["environment"] == WITH_OTEL
            state = f"opentelemetry-sdk {found}" if found else "no opentelemetry-sdk"
            verdict = "as it should" if bool(found) == expected else "WRONG: the comparison means nothing"
            lines.append(f"  environment {record['environment']}: {state} ({verdict})")
    return lines


def leftovers_text(records: list[Record]) -> str:
    """What each observed start left: the spans its OTLP receiver got, its payload log's lines, its drops."""
    lines = []
    for record in records:
        if record["kind"] == "leftovers":
            figures = {key: value for key, value in record.items() if key not in ("kind", "target", "label")}
            lines.append(f"  {record['label']}: " + ", ".join(f"{key} {value}" for key, value in figures.items()))
    checks = environment_check(records)
    if not lines and not checks:
        return ""
    return "\n".join(
        ["observed starts (what the receiver and the payload log got, what the server dropped):", *lines, *checks]
    )


def table(scenario_rows: list[Record], target_rows: list[Record], heading: str) -> str:
    targets = [row["target"] for row in target_rows]
    lines = [heading, ""]
    for scenario in SCENARIOS:
        rows = sorted((r for r in scenario_rows if r["scenario"] == scenario), key=lambda r: targets.index(r["target"]))
        if rows:
            lines += [*scenario_block(scenario, rows), ""]
    lines += comparison_lines(scenario_rows)
    lines += observability_lines(scenario_rows)
    lines += target_block(target_rows)
    return "\n".join(lines)
