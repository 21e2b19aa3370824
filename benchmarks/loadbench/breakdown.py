"""Where our targets' server time goes, from Triton's statistics extension (``GET /v2/models/NAME/stats``): read
before and after each measured load, the difference gives each request's mean queue, input, inference and output
time and its whole time in the server (as perf_analyzer computes them: a stage's nanoseconds over its count), each
stage's share of that whole, and the rows of a model call.

A target reads the model it loads (``Target.stats_model``). Each server process counts its own requests, so a
target of several workers gives no figures (a read may reach either process); nor does a target that is not
ours. A server without the extension (the route answers 404) gives a note instead of figures.
"""

from __future__ import annotations

import json
import urllib.error
from statistics import median
from typing import Any

from .client import OPENER, check_loopback

#: Triton's ``InferStatistics`` durations, in the order a request goes through them, then its whole time.
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
WHOLE = "success"
HEADINGS = {"queue": "queue", "compute_input": "input", "compute_infer": "infer", "compute_output": "output"}
#: The result record's fields: each stage's and the whole's mean µs a request, the mean rows of a model call,
#: and why there are none (None when there are).
FIELDS = (*(f"server_{stage}_us" for stage in (*STAGES, WHOLE)), "server_rows_per_call", "server_stats_note")
NOT_IMPLEMENTED = "the statistics route answered 404 (no statistics extension in this build)"

Totals = dict[str, int]


def read(base_url: str, model: str) -> Totals | str:
    """The model's statistics summed over its versions: each stage's count and ns, inferences and executions;
    or a note saying why there are none."""
    try:
        body = get_json(f"{base_url}/v2/models/{model}/stats")
    except urllib.error.HTTPError as error:
        if error.code == 404:  # no such route, or no such model: every model's statistics tell which
            return NOT_IMPLEMENTED if answers_404(f"{base_url}/v2/models/stats") else f"no model {model!r} (404)"
        return f"the statistics route answered {error.code}"
    except (OSError, ValueError) as error:
        return f"the statistics could not be read: {error}"
    totals = dict.fromkeys([*(f"{s}_{k}" for s in (*STAGES, WHOLE) for k in ("count", "ns")), "inferences"], 0)
    totals["executions"] = 0
    try:
        for entry in body["model_stats"]:
            for stage in (*STAGES, WHOLE):
                totals[f"{stage}_count"] += int(entry["inference_stats"][stage]["count"])
                totals[f"{stage}_ns"] += int(entry["inference_stats"][stage]["ns"])
            totals["inferences"] += int(entry["inference_count"])
            totals["executions"] += int(entry["execution_count"])
    except (KeyError, TypeError, ValueError) as error:
        return f"the statistics were not in Triton's form: {type(error).__name__}: {error}"
    return totals


def get_json(url: str) -> Any:
    with OPENER.open(check_loopback(url), timeout=10) as answer:
        return json.loads(answer.read())


def answers_404(url: str) -> bool:
    try:
        get_json(url)
    except urllib.error.HTTPError as error:
        return error.code == 404
    except (OSError, ValueError):
        return False
    return False


def between(before: Totals | str | None, after: Totals | str | None) -> dict[str, Any]:
    """The result record's breakdown fields for the requests counted between two reads (None where unknown)."""
    fields: dict[str, Any] = dict.fromkeys(FIELDS, None)
    if before is None or after is None:
        return fields
    if isinstance(before, str) or isinstance(after, str):
        fields["server_stats_note"] = before if isinstance(before, str) else after
        return fields
    change = {key: after[key] - before[key] for key in after}
    if change[f"{WHOLE}_count"] <= 0 or any(value < 0 for value in change.values()):
        fields["server_stats_note"] = "no request counted between the two reads"
        return fields
    for stage in (*STAGES, WHOLE):
        count = change[f"{stage}_count"]
        fields[f"server_{stage}_us"] = round(change[f"{stage}_ns"] / count / 1000, 1) if count > 0 else None
    executions = change["executions"]
    fields["server_rows_per_call"] = round(change["inferences"] / executions, 1) if executions > 0 else None
    return fields


def breakdown_text(records: list[dict[str, Any]]) -> str:
    """One line per (target, scenario) that has figures (the medians over the rounds); the notes of the others."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    for record in records:
        if record["kind"] != "result":
            continue
        if record.get(f"server_{WHOLE}_us") is not None:
            groups.setdefault((record["target"], record["scenario"]), []).append(record)
        elif record.get("server_stats_note"):
            notes.setdefault(record["target"], record["server_stats_note"])
    lines = [
        "server-side breakdown (Triton's statistics extension, GET /v2/models/NAME/stats around each measured load):"
        " mean µs a request, and the share of the request's whole time in the server; medians over the rounds",
    ]
    if groups:
        stages = "".join(f"{HEADINGS[stage]:>15}" for stage in STAGES)
        lines.append(f"  {'target':<20} {'scenario':<20}{stages}{'other':>15}{'server µs':>11}{'rows/call':>10}")
    for (target, scenario), rounds in groups.items():
        lines.append(f"  {target:<20} {scenario:<20}" + breakdown_cells(rounds))
    lines += [f"  {target}: {note}" for target, note in notes.items() if not any(t == target for t, _ in groups)]
    if len(lines) == 1:
        lines.append("  no figures: no target of ours with one server process ran")
    return "\n".join(lines)


def breakdown_cells(rounds: list[dict[str, Any]]) -> str:
    """Each stage as ``µs (share)``, the rest of the server's time (routing, the HTTP layer), the whole, rows."""
    whole = middle(rounds, f"server_{WHOLE}_us")
    figures = [middle(rounds, f"server_{stage}_us") for stage in STAGES]
    other = whole - sum(figure for figure in figures if figure == figure)  # NaN (a stage not measured) left out
    cells = "".join(f"{share(figure, whole):>15}" for figure in [*figures, other])
    return cells + f"{whole:>11.1f}{middle(rounds, 'server_rows_per_call'):>10.1f}"


def share(figure: float, whole: float) -> str:
    if figure != figure or not whole:  # NaN: not measured
        return "-"
    return f"{figure:.1f} ({100 * figure / whole:.0f}%)"


def middle(rounds: list[dict[str, Any]], key: str) -> float:
    present = [record[key] for record in rounds if record.get(key) is not None]
    return float(median(present)) if present else float("nan")
