"""The soak: one of our targets under steady load for minutes, to see errors and whether memory grows."""

from __future__ import annotations

import logging
import time
from statistics import median
from typing import Any

from .fixtures import WrongAnswer
from .load import LoadFailed
from .report import Columns, number
from .sessions import Context, Running, StartFailed, record_start, rounded, run_load, started, verify
from .targets import TARGETS

logger = logging.getLogger("bench")
MINUTE = 60.0
SOAK_COLUMNS = Columns(
    [("minute", 7), ("req/s", 9), ("mean ms", 9), ("p50 ms", 9), ("p99 ms", 9), ("errors", 8), ("RSS MiB", 9),
     ("max", 9), ("anon", 8)]
)  # fmt: skip


def soak(context: Context) -> list[dict[str, Any]]:
    """Minute after minute of load (wrk, or h2load for a gRPC target) at SOAK_CONNECTIONS; a record a minute."""
    target = TARGETS[context.settings.soak_target]
    minutes: list[dict[str, Any]] = []
    try:
        with started(context, target, f"soak-{target.name}", batching=False) as running:
            record_start(context, running, 1, batching=False)
            verify(context, running)
            for minute in range(1, context.settings.soak_minutes + 1):
                minutes.append(soak_minute(context, running, minute))
            verify(context, running, " after the soak")
    except (StartFailed, WrongAnswer, LoadFailed, OSError) as error:
        context.records.failure(target.name, "soak", str(error))
    return minutes


def soak_minute(context: Context, running: Running, minute: int) -> dict[str, Any]:
    target = running.target
    output = context.logs / f"soak-{target.name}-minute{minute}.{'h2load' if target.grpc else 'wrk'}"
    begin = time.time()
    result = run_load(context, running, "small", 2, context.settings.soak_connections, MINUTE, output)
    memory = running.sampler.between(begin, time.time())
    rss = [m.rss_mib for m in memory] or [0.0]
    anon = [m.anon_mib for m in memory] or [0.0]
    record = context.records.add(
        "soak",
        target=target.name,
        minute=minute,
        connections=context.settings.soak_connections,
        rps=round(result.rps, 1),
        mean_ms=round(result.mean_ms, 3),
        p50_ms=rounded(result.p50_ms),
        p99_ms=rounded(result.p99_ms),
        errors=result.errors,
        rss_mib=round(median(rss), 1),
        rss_max_mib=max(rss),
        anon_mib=round(median(anon), 1),
    )
    logger.info("soak minute %d: %.0f req/s, errors %d, RSS %.1f MiB", minute, result.rps, result.errors, median(rss))
    return record


def soak_table(minutes: list[dict[str, Any]], connections: int) -> str:
    if not minutes:
        return "soak: no minute completed (see the failure above)"
    lines = [f"soak: {minutes[0]['target']}, 1 row at {connections} connections, {len(minutes)} minute(s)"]
    lines += SOAK_COLUMNS.header()
    for m in minutes:
        cells = [str(m["minute"]), number(m["rps"], 1), number(m["mean_ms"], 2), number(m["p50_ms"], 2)]
        cells += [number(m["p99_ms"], 2)]
        cells += [str(m["errors"]), number(m["rss_mib"], 1), number(m["rss_max_mib"], 1), number(m["anon_mib"], 1)]
        lines.append(SOAK_COLUMNS.line(cells))
    first, last = minutes[0], minutes[-1]
    errors = sum(m["errors"] for m in minutes)
    lines.append(
        f"errors in all: {errors}; RSS (median of the minute's samples) first minute {first['rss_mib']:.1f} MiB, "
        f"last minute {last['rss_mib']:.1f} MiB ({last['rss_mib'] - first['rss_mib']:+.1f} MiB)"
    )
    return "\n".join(lines)
