"""``PIPELINES=1 make bench``: a two-step pipeline against its two models called directly, and against the same
two chained over HTTP by a client.

One server of the ``ours`` environment serves the example plugin's ``iris-proba`` and the bench plugin
``plugins/pipeline_sum`` (``hooked-sum``, the sum of each row; on the server's ``PYTHONPATH`` with its distribution
recorded as an installer would), and the pipeline ``iris-sum`` of the issue (``iris-proba`` then ``hooked-sum``).
Each round measures, for a 1-row request:

- at 1 connection, one request after another from a client of this process on a kept-alive connection: the
  latency of ``iris-proba``, of ``hooked-sum`` (on ``iris-proba``'s answer), of the pipeline, and of the chain
  (``iris-proba``, then ``hooked-sum`` on its answer, both over HTTP, by the same client);
- at 32 connections (wrk): the throughput of each model and of the pipeline.

The table gives the pipeline against the sum of the two models (the issue's bound: at most 1.3x) and the chain
against the pipeline (at least 2x: at 1 connection, latencies; at 32, the chain's throughput is that of its
slower half at best, so the figure is the pipeline's req/s against half the harmonic sum of the two models').
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .client import NotReady, wait_ready
from .load import LoadFailed, RequestFiles, run_wrk
from .procs import Server, free_ports
from .records import Records
from .settings import BENCH_DIR, BenchSettings
from .venvs import ours_for, record_distribution

logger = logging.getLogger("bench")

PLUGIN = BENCH_DIR / "plugins" / "pipeline_sum"
DISTRIBUTION = "stevedore-bench-pipeline"
ENTRY_POINTS = "[stevedore.predictors]\nhooked-sum = stevedore_bench_pipeline:HookedSum\n"
OTHER_PLUGINS = "stevedore-bench-iris-gil"
CONFIG = """
[pipelines.iris-sum]
type = "sequence"
steps = [{ model = "iris-proba" }, { model = "hooked-sum", data = "$response" }]
"""
ROW = [[5.1, 3.5, 1.4, 0.2]]
PATHS = {
    "iris-proba": "/models/iris-proba/predict",
    "hooked-sum": "/models/hooked-sum/predict",
    "pipeline": "/pipelines/iris-sum/predict",
}
HEADERS = {"Content-Type": "application/json"}


class WrongAnswer(Exception):
    pass


def bench(settings: BenchSettings, run_dir: Path, records: Records) -> str:
    venv = ours_for("pipelines", settings, run_dir, records)
    site = record_distribution(run_dir / "work" / "site", DISTRIBUTION, ENTRY_POINTS)
    for round_number in range(1, settings.rounds + 1):
        logger.info("pipelines: round %d of %d", round_number, settings.rounds)
        try:
            with started(settings, venv, site, run_dir, round_number) as port:
                measure(settings, port, run_dir, records, round_number)
        except (NotReady, WrongAnswer, LoadFailed, OSError) as error:
            records.failure("pipelines", "round", str(error), round=round_number)
    text = table(records.items, settings)
    (run_dir / "pipelines.txt").write_text(text + "\n")
    return text


@contextmanager
def started(settings: BenchSettings, venv: Path, site: Path, run_dir: Path, round_number: int) -> Iterator[int]:
    label = f"pipelines-r{round_number}"
    work = run_dir / "work" / label
    work.mkdir(parents=True)
    (work / "stevedore.toml").write_text(CONFIG)
    port, grpc_port = free_ports(2)
    argv = [
        str(venv / "bin" / "stevedore-server"), "run", "--host", "127.0.0.1", "--port", str(port),
        "--grpc-port", str(grpc_port), "--config", str(work / "stevedore.toml"), "--disable-plugins", OTHER_PLUGINS,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{site}:{PLUGIN}"}
    server = Server(label, argv, env, work, run_dir / "logs" / f"{label}.server.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", server, settings.startup_timeout)
        yield port
    finally:
        server.stop(settings.stop_grace)


class Client:
    """One kept-alive connection, one request after another."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, value: Any) -> Any:
        self.connection.request("POST", path, json.dumps(value), HEADERS)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise WrongAnswer(f"{path} answered {response.status}: {body[:200]!r}")
        return json.loads(body)["predictions"]


def calls(client: Client, probabilities: Any) -> dict[str, Callable[[], Any]]:
    """What the client does once for each measured case."""
    return {
        "iris-proba": lambda: client.post(PATHS["iris-proba"], ROW),
        "hooked-sum": lambda: client.post(PATHS["hooked-sum"], probabilities),
        "pipeline": lambda: client.post(PATHS["pipeline"], ROW),
        "chain": lambda: client.post(PATHS["hooked-sum"], client.post(PATHS["iris-proba"], ROW)),
    }


def measure(settings: BenchSettings, port: int, run_dir: Path, records: Records, round_number: int) -> None:
    client = Client(port)
    probabilities = client.post(PATHS["iris-proba"], ROW)
    if abs(client.post(PATHS["pipeline"], ROW)[0] - 1.0) > 1e-9:
        raise WrongAnswer("the pipeline's answer is not the sum of the probabilities")
    for case, call in calls(client, probabilities).items():
        latencies = timed(call, settings.warmup, settings.duration)
        records.add("pipelines-c1", round=round_number, case=case, calls=len(latencies),
                    mean_us=round(statistics.fmean(latencies), 1),
                    p50_us=round(statistics.median(latencies), 1))  # fmt: skip
    for case, path in PATHS.items():
        body = ROW if case != "hooked-sum" else probabilities
        files = request_files(run_dir / "work" / "requests", case, body)
        url = f"http://127.0.0.1:{port}{path}"
        if settings.warmup > 0:
            run_wrk(url, files, 2, 32, settings.warmup, run_dir / "logs" / f"pipelines-{case}.warmup.wrk")
        result = run_wrk(url, files, 2, 32, settings.duration, run_dir / "logs" / f"pipelines-{case}.wrk")
        records.add("pipelines-c32", round=round_number, case=case, rps=round(result.rps, 1),
                    p99_ms=result.p99_ms, errors=result.errors)  # fmt: skip


def timed(call: Callable[[], Any], warmup: float, duration: float) -> list[float]:
    """Microseconds of each call during ``duration`` seconds, after ``warmup`` seconds of the same."""
    stop_at = time.monotonic() + warmup
    while time.monotonic() < stop_at:
        call()
    latencies = []
    stop_at = time.monotonic() + duration
    while time.monotonic() < stop_at:
        begin = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - begin) * 1e6)
    return latencies


def request_files(directory: Path, name: str, body: Any) -> RequestFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = RequestFiles(directory / f"{name}.body", directory / f"{name}.headers")
    files.body.write_text(json.dumps(body))
    files.headers.write_text("Content-Type: application/json\n")
    return files


def median_of(items: list[dict[str, Any]], kind: str, case: str, key: str) -> float | None:
    found = [item[key] for item in items if item["kind"] == kind and item["case"] == case]
    return statistics.median(found) if found else None


def table(items: list[dict[str, Any]], settings: BenchSettings) -> str:
    c1 = {case: median_of(items, "pipelines-c1", case, "mean_us") for case in (*PATHS, "chain")}
    c32 = {case: median_of(items, "pipelines-c32", case, "rps") for case in PATHS}
    lines = [
        f"pipelines: {settings.rounds} round(s), {settings.duration:g} s per case after {settings.warmup:g} s of "
        "warm-up, medians over the rounds; 1 row; iris-sum = iris-proba then hooked-sum",
        "",
        "1 connection, mean latency (us): " + ", ".join(f"{case} {shown(value)}" for case, value in c1.items()),
        "32 connections (wrk), req/s: " + ", ".join(f"{case} {shown(value)}" for case, value in c32.items()),
        *ratios(c1, c32),
    ]
    failures = [f"!! {r['target']} (round {r.get('round')}): {r['stage']}: {r['error']}"
                for r in items if r["kind"] == "failure"]  # fmt: skip
    return "\n".join(lines + failures)


def ratios(c1: dict[str, float | None], c32: dict[str, float | None]) -> list[str]:
    """The issue's two bounds, from the medians (where every case measured)."""
    lines = []
    proba, summed, pipeline, chain = (c1[case] for case in ("iris-proba", "hooked-sum", "pipeline", "chain"))
    if proba and summed and pipeline and chain:
        lines.append(f"pipeline / (iris-proba + hooked-sum), latency at c1: {pipeline / (proba + summed):.2f}x "
                     "(the issue's bound: at most 1.3x)")  # fmt: skip
        lines.append(f"chain over HTTP / pipeline, latency at c1: {chain / pipeline:.2f}x (the issue: at least 2x)")
    proba, summed, pipeline = (c32[case] for case in ("iris-proba", "hooked-sum", "pipeline"))
    if proba and summed and pipeline:
        both = 1 / (1 / proba + 1 / summed)  # the rate of the two calls one after the other, by the same server
        lines.append(f"pipeline req/s / the two models' combined req/s at c32: {pipeline / both:.2f}x")
    return lines


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
