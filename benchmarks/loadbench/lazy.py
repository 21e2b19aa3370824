"""``LAZY=1 make bench``: models loaded lazily within a memory budget, against models loaded at startup.

Two starts of our server (``stevedore-server run`` of the ``ours`` environment) serve the bench plugin
``plugins/lazy_many`` (``lazy-NN`` answers ``NN + sum(row)``, holding 24 MiB once loaded), put on the server's
``PYTHONPATH`` with its distribution recorded as an installer would (no wheel to build):

- ``startup``: 5 models, loaded at startup, no budget;
- ``lazy``: 50 models, ``model_load = "lazy"``, ``model_memory_budget`` holding 5 (132 MiB: five and a half).

The lazy server is first sent one request to each of 11 models in turn, timed: the first request of a model is
its load, its self-test and its answer; the first 5 fit, each later one evicts the least recently used. Then both
servers get the same wrk loads (``lazy.lua``), each after a warm-up: ``lazy-00`` alone at 1 and at 32 connections
(the lazy one loaded by then: a lazy model after its first load against a startup model), then at 32 connections
a model chosen uniformly at random for each request among the server's models: 5 loaded for good against 50 of
which 5 fit (9 requests in 10 find their model unloaded, and load it, evicting another). The answers of a few
models are checked before and after each load, and the lazy server must never have more than 5 loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import NotReady, check_loopback, send, wait_ready
from .load import LoadFailed, LoadResult, parse
from .procs import Server, free_ports, tree_memory
from .records import Records
from .sampler import MemorySampler
from .settings import BENCH_DIR, BenchSettings
from .venvs import ours_for, record_distribution

logger = logging.getLogger("bench")

SCRIPT = Path(__file__).resolve().parent / "lazy.lua"
PLUGIN = BENCH_DIR / "plugins" / "lazy_many"
DISTRIBUTION = "stevedore-bench-lazy"
ENTRY_POINTS = "[stevedore.predictors]\nlazy = stevedore_bench_lazy:models\n"
#: The ``ours`` environment's plugins that declare models: off, so the servers serve the bench plugin's only.
OTHER_PLUGINS = "stevedore-sklearn-logreg,stevedore-bench-iris-gil"
MEBIBYTES = 24
#: Models the budget holds, and models the lazy server serves.
HELD, LAZY_COUNT = 5, 50
#: Five models and a half: a sixth never fits.
BUDGET = f"{MEBIBYTES * (2 * HELD + 1) // 2}MiB"
#: The model both servers are loaded with alone.
SOLE = 0
#: The models whose first requests are timed, in this order: 5 into free room, then 6 that each evict one (the
#: last, ``SOLE``, is then loaded for the single-model loads).
FIRSTS = (*range(5, 15), SOLE)
#: Checked before and after each load: three of the startup server's, and the lazy server's too.
CHECKED = (0, 1, 4)
ROW = [1.0, 2.0]
WRK_TIMEOUT = "30s"


@dataclass(frozen=True)
class Setup:
    name: str
    models: int
    config: str


SETUPS = (
    Setup("startup", HELD, 'model_load = "startup"\n'),
    Setup("lazy", LAZY_COUNT, f'model_load = "lazy"\nmodel_memory_budget = "{BUDGET}"\n'),
)


@dataclass(frozen=True)
class Load:
    name: str
    threads: int
    connections: int
    #: Uniformly random among all the server's models; else ``SOLE`` alone.
    random: bool


LOADS = (Load("one-c1", 1, 1, False), Load("one-c32", 2, 32, False), Load("random-c32", 2, 32, True))


class WrongAnswer(Exception):
    """A model that answered wrong or not 200, or a lazy server holding more models than its budget."""


@dataclass
class Running:
    setup: Setup
    server: Server
    port: int
    sampler: MemorySampler

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def bench(settings: BenchSettings, run_dir: Path, records: Records) -> str:
    """Install (or update) the ``ours`` environment, run the rounds, write and return the table."""
    venv = ours_for("lazy", settings, run_dir, records)
    site = record_distribution(run_dir / "work" / "site", DISTRIBUTION, ENTRY_POINTS)
    for round_number in range(1, settings.rounds + 1):
        logger.info("lazy models: round %d of %d", round_number, settings.rounds)
        for setup in SETUPS:
            session(settings, venv, site, setup, round_number, run_dir, records)
    text = lazy_table(records.items, settings)
    (run_dir / "lazy.txt").write_text(text + "\n")
    return text


def session(
    settings: BenchSettings, venv: Path, site: Path, setup: Setup, round_number: int, run_dir: Path, records: Records
) -> None:
    label = f"lazy-{setup.name}-r{round_number}"
    stage = "start"
    try:
        with started(settings, venv, site, setup, run_dir, label, records, round_number) as running:
            if setup.name == "lazy":
                stage = "first requests"
                first_requests(running, records, round_number)
            for load in LOADS:
                stage = f"check before {load.name}"
                check(running)
                stage = f"load {load.name}"
                measure(settings, running, load, records, round_number, run_dir / "logs" / f"{label}-{load.name}.wrk")
            stage = "check at the end"
            check(running)
    except (NotReady, WrongAnswer, LoadFailed, OSError) as error:
        records.failure(f"lazy-{setup.name}", stage, str(error), round=round_number)


@contextmanager
def started(
    settings: BenchSettings,
    venv: Path,
    site: Path,
    setup: Setup,
    run_dir: Path,
    label: str,
    records: Records,
    round_number: int,
) -> Iterator[Running]:
    """A ready server of the setup, its start recorded; stopped (its process group) however the block ends."""
    work = run_dir / "work" / label
    work.mkdir(parents=True)
    (work / "stevedore.toml").write_text(setup.config)
    port, grpc_port = free_ports(2)
    argv = [
        str(venv / "bin" / "stevedore-server"), "run", "--host", "127.0.0.1", "--port", str(port),
        "--grpc-port", str(grpc_port), "--config", str(work / "stevedore.toml"), "--disable-plugins", OTHER_PLUGINS,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{site}:{PLUGIN}", "BENCH_LAZY_MODELS": str(setup.models)}
    server = Server(label, argv, env, work, run_dir / "logs" / f"{label}.server.log")
    sampler = MemorySampler(server.pid, settings.sample_interval)
    try:
        startup = wait_ready(f"http://127.0.0.1:{port}/readyz", server, settings.startup_timeout)
        time.sleep(1.0)  # let start-up work that follows readiness settle before reading idle memory
        idle = tree_memory(server.pid)
        records.add("lazy-start", setup=setup.name, round=round_number, startup_s=round(startup, 3),
                    idle_rss_mib=idle.rss_mib)  # fmt: skip
        logger.info("%s: ready in %.2f s, idle RSS %.1f MiB", label, startup, idle.rss_mib)
        yield Running(setup, server, port, sampler)
    finally:
        sampler.stop()
        server.stop(settings.stop_grace)


def predict(running: Running, number: int) -> tuple[int, Any]:
    """One row to ``lazy-NN``: the status and the answer's first prediction (None when not 200)."""
    body = json.dumps([ROW]).encode()
    answer = send(running.url(f"/models/lazy-{number:02d}/predict"), body, {"Content-Type": "application/json"})
    if answer.status != 200:
        return answer.status, answer.body.decode(errors="replace")[:200]
    return answer.status, json.loads(answer.body)["predictions"][0]


def check(running: Running) -> None:
    """A few models answer right; the lazy server holds no more models than its budget."""
    for number in CHECKED:
        status, prediction = predict(running, number)
        if status != 200 or prediction != {"value": number + sum(ROW)}:
            raise WrongAnswer(f"lazy-{number:02d} answered {status}: {prediction!r}")
    loaded = metric_total(running, "stevedore_models_loaded")
    if running.setup.name == "lazy" and loaded > HELD:
        raise WrongAnswer(f"{loaded:g} models loaded, more than the budget holds ({HELD})")


def first_requests(running: Running, records: Records, round_number: int) -> None:
    """Each model of ``FIRSTS`` asked once, in turn, timed; then asked again (loaded by then), timed."""
    for position, number in enumerate(FIRSTS):
        first_ms, (status, prediction) = timed(running, number)
        again_ms, _ = timed(running, number)
        if status != 200 or prediction != {"value": number + sum(ROW)}:
            raise WrongAnswer(f"lazy-{number:02d}'s first request answered {status}: {prediction!r}")
        records.add("lazy-first", round=round_number, model=f"lazy-{number:02d}", evicts=position >= HELD,
                    first_ms=round(first_ms, 2), again_ms=round(again_ms, 2))  # fmt: skip
    load_seconds = metric_total(running, "stevedore_model_load_duration_seconds_sum")
    records.add("lazy-load-duration", round=round_number, loads=len(FIRSTS),
                mean_ms=round(load_seconds / len(FIRSTS) * 1e3, 2))  # fmt: skip


def timed(running: Running, number: int) -> tuple[float, tuple[int, Any]]:
    begin = time.perf_counter()
    answer = predict(running, number)
    return (time.perf_counter() - begin) * 1e3, answer


def metric_total(running: Running, name: str) -> float:
    """A metric of ours summed over its labels (and over the server's processes)."""
    text = send(running.url("/metrics"), timeout=30).body.decode(errors="replace")
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def measure(
    settings: BenchSettings, running: Running, load: Load, records: Records, round_number: int, output: Path
) -> None:
    """Warm up, then one measured wrk load, recorded with the loads and evictions it caused and the peak RSS."""
    count = running.setup.models if load.random else 1
    if settings.warmup > 0:
        wrk(running, load, count, settings.warmup, output.with_suffix(".warmup.wrk"))
    loads_before = metric_total(running, "stevedore_model_loads_total")
    evictions_before = metric_total(running, "stevedore_model_evictions_total")
    begin = time.time()
    result = wrk(running, load, count, settings.duration, output)
    peak = running.sampler.peak(begin, time.time())
    loads = metric_total(running, "stevedore_model_loads_total") - loads_before
    evictions = metric_total(running, "stevedore_model_evictions_total") - evictions_before
    records.add(
        "lazy-result", setup=running.setup.name, load=load.name, round=round_number, models=count,
        connections=load.connections, requests=result.requests, rps=round(result.rps, 1),
        p50_ms=rounded(result.p50_ms), p99_ms=rounded(result.p99_ms), mean_ms=rounded(result.mean_ms),
        max_ms=rounded(result.max_ms), errors=result.errors, loads=round(loads), evictions=round(evictions),
        peak_rss_mib=None if peak is None else peak.rss_mib,
    )  # fmt: skip
    logger.info("lazy %s %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %d, loads %d, evictions %d",
                running.setup.name, load.name, result.rps, result.p50_ms or 0, result.p99_ms or 0, result.errors,
                loads, evictions)  # fmt: skip


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def wrk(running: Running, load: Load, count: int, seconds: float, output: Path) -> LoadResult:
    """wrk with ``lazy.lua`` for ``seconds`` (whole, at least 1) over ``count`` models; kept in ``output``."""
    duration = max(1, round(seconds))
    argv = [
        "wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{duration}s", "--timeout", WRK_TIMEOUT,
        "-s", str(SCRIPT), check_loopback(running.url("/")),
    ]  # fmt: skip
    env = {**os.environ, "LOAD_FIRST": "0" if count > 1 else str(SOLE), "LOAD_COUNT": str(count)}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"wrk did not finish within {duration + 60} s") from None
    output.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if not running.server.group_alive():
        raise LoadFailed(f"the server exited during {load.name} (log: {running.server.log})")
    return parse(done.stdout, output)


# -- the table ----------------------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def results_of(items: list[dict[str, Any]], setup: str, load: str, key: str) -> float | None:
    found = [r[key] for r in items if r["kind"] == "lazy-result" and r["setup"] == setup and r["load"] == load]
    return median([value for value in found if value is not None])


def ratio(lazy: float | None, startup: float | None) -> str:
    return "-" if lazy is None or not startup else f"{lazy / startup:.2f}x"


def shown(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def loads_table(items: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'load':<11} {'setup':<8} {'models':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'loads':>6} {'evicted':>7} {'peak RSS':>8}"
    ]
    for load in LOADS:
        for setup in SETUPS:
            row = [results_of(items, setup.name, load.name, key) for key in
                   ("rps", "p50_ms", "p99_ms", "errors", "loads", "evictions", "peak_rss_mib")]  # fmt: skip
            models = setup.models if load.random else 1
            lines.append(
                f"{load.name:<11} {setup.name:<8} {models:>6} {shown(row[0], 0):>8} {shown(row[1]):>8} "
                f"{shown(row[2]):>8} {shown(row[3], 0):>6} {shown(row[4], 0):>6} {shown(row[5], 0):>7} "
                f"{shown(row[6], 0):>8}"
            )
        rps = [results_of(items, setup.name, load.name, "rps") for setup in SETUPS]
        p99 = [results_of(items, setup.name, load.name, "p99_ms") for setup in SETUPS]
        lines.append(f"{'':<11} lazy/startup: req/s {ratio(rps[1], rps[0])}, p99 {ratio(p99[1], p99[0])}")
    return lines


def first_table(items: list[dict[str, Any]]) -> list[str]:
    firsts = [r for r in items if r["kind"] == "lazy-first"]
    lines = ["first requests of the lazy server (one at a time; load, self-test and answer), ms:"]
    for evicts, what in ((False, "into free room"), (True, "evicting one")):
        chosen = [r for r in firsts if r["evicts"] is evicts]
        first = [r["first_ms"] for r in chosen]
        again = [r["again_ms"] for r in chosen]
        if first:
            lines.append(
                f"  {what:<15} n={len(first):<3} first: median {shown(median(first))}, min {min(first):.2f}, "
                f"max {max(first):.2f}; the request after: median {shown(median(again))}"
            )
    durations = [r["mean_ms"] for r in items if r["kind"] == "lazy-load-duration"]
    lines.append(f"  the server's own load duration (stevedore_model_load_duration_seconds), mean: "
                 f"{shown(median(durations))} ms")  # fmt: skip
    starts = [r for r in items if r["kind"] == "lazy-start"]
    for setup in SETUPS:
        startup = median([r["startup_s"] for r in starts if r["setup"] == setup.name])
        idle = median([r["idle_rss_mib"] for r in starts if r["setup"] == setup.name])
        lines.append(f"  {setup.name} server: ready in {shown(startup)} s, idle RSS {shown(idle, 0)} MiB")
    return lines


def lazy_table(items: list[dict[str, Any]], settings: BenchSettings) -> str:
    heading = (
        f"lazy models: {settings.rounds} round(s), {settings.duration:g} s per load after {settings.warmup:g} s of "
        f"warm-up, medians over the rounds; startup: {HELD} models loaded at startup; lazy: {LAZY_COUNT} lazy "
        f"models, budget {BUDGET} ({HELD} of {MEBIBYTES} MiB); one-*: lazy-{SOLE:02d} alone; random-c32: a model "
        f"drawn uniformly for each request; loads, evicted: during the measured load; RSS in MiB"
    )
    failures = [f"!! {r['target']} (round {r.get('round')}): {r['stage']}: {r['error']}"
                for r in items if r["kind"] == "failure"]  # fmt: skip
    return "\n".join([heading, "", *loads_table(items), "", *first_table(items), *failures])
