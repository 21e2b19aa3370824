"""One start of one target: start it, time it to ready, check its answers, load it, stop it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import grpc_client
from .client import NotReady, wait_ready
from .fixtures import Fixtures, WrongAnswer, check_answer
from .h2load import run_h2load
from .load import LoadFailed, LoadResult, RequestFiles, run_wrk
from .procs import Memory, Server, free_ports, tree_memory
from .records import Records
from .sampler import MemorySampler
from .scenarios import ROWS, Scenario
from .settings import BenchSettings
from .targets import Launch, Target

logger = logging.getLogger("bench")


class StartFailed(Exception):
    """A server that could not be prepared or started."""


@dataclass
class Running:
    """A started, ready server and what is known of it."""

    target: Target
    server: Server
    sampler: MemorySampler
    ports: list[int]
    startup_s: float
    idle: Memory
    #: gRPC: size -> the framed size of a right answer, from the last check (h2load counts answer bytes).
    answer_bytes: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[0]}{path}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def load_url(self) -> str:
        """Where the load goes: the HTTP route, or the gRPC method on the gRPC port."""
        if self.target.grpc:
            return f"http://{self.grpc_address}{self.target.predict_path}"
        return self.url(self.target.predict_path)


@dataclass(frozen=True)
class Context:
    """What every session of a run shares."""

    settings: BenchSettings
    records: Records
    fixtures: Fixtures
    venvs: dict[str, Path]
    requests: dict[tuple[str, str], RequestFiles]  # (target, size) -> request files
    logs: Path
    work: Path


def launch_for(context: Context, target: Target, label: str, batching: bool) -> Launch:
    work = context.work / label
    work.mkdir(parents=True, exist_ok=True)
    config = context.fixtures.batching_config if batching else None
    return Launch(context.venvs[target.venv], free_ports(target.ports), context.fixtures.model, work, config)


@contextmanager
def started(context: Context, target: Target, label: str, batching: bool) -> Iterator[Running]:
    """A ready server for the block; stopped (its whole process group) however the block ends."""
    launch = launch_for(context, target, label, batching)
    try:
        target.prepare(launch)
        env = {**os.environ, **target.environment(launch)}
        server = Server(target.name, target.argv(launch), env, launch.work, context.logs / f"{label}.server.log")
    except OSError as error:
        raise StartFailed(f"{type(error).__name__}: {error}") from None
    sampler = MemorySampler(server.pid, context.settings.sample_interval)
    try:
        ready_url = f"http://127.0.0.1:{launch.port}{target.ready_path}"
        startup = wait_ready(ready_url, server, context.settings.startup_timeout)
        time.sleep(1.0)  # let start-up work that follows readiness settle before reading idle memory
        yield Running(target, server, sampler, launch.ports, startup, tree_memory(server.pid))
    except NotReady as error:
        raise StartFailed(f"{error}; it said: {last_line(server.log)!r} (log: {server.log})") from None
    finally:
        sampler.stop()
        server.stop(context.settings.stop_grace)


def last_line(log: Path) -> str:
    """The log's last non-empty line: usually the reason a server would not start."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[-50:] if line.strip()]
    return lines[-1][:200] if lines else ""


def verify(context: Context, running: Running, when: str = "") -> None:
    """The 1-row and the 1000-row answers must be the model's own predictions; raises WrongAnswer.

    A gRPC target is asked by a real gRPC client with the very requests h2load posts.
    """
    target, fixtures = running.target, context.fixtures
    expected = {size: fixtures.expected[size][target.payload.precision] for size in fixtures.rows}
    if isinstance(target.payload, grpc_client.GrpcPayload):
        requests = {size: context.requests[(target.name, size)] for size in fixtures.rows}
        tools = context.venvs["tools"] / "bin" / "python"
        checked = grpc_client.check(tools, running.grpc_address, requests, expected)
        running.answer_bytes = {size: answer_bytes for size, (answer_bytes, _) in checked.items()}
        messages = {size: message for size, (_, message) in checked.items()}
    else:
        messages = {
            size: check_answer(running.url(target.predict_path), target.payload, rows, expected[size])
            for size, rows in fixtures.rows.items()
        }
    for size, message in messages.items():
        logger.info("%s: %s request%s: %s", target.name, size, when, message)


def run_load(
    context: Context, running: Running, size: str, threads: int, connections: int, seconds: float, output: Path
) -> LoadResult:
    """wrk for HTTP, h2load for gRPC: the same closed loop of one request in flight per connection."""
    request = context.requests[(running.target.name, size)]
    if running.target.grpc:
        answer_bytes = running.answer_bytes.get(size)
        return run_h2load(running.load_url, request, threads, connections, seconds, output, answer_bytes)
    return run_wrk(running.load_url, request, threads, connections, seconds, output)


def load(context: Context, running: Running, scenario: Scenario, seconds: float, output: Path) -> LoadResult:
    return run_load(context, running, scenario.size, scenario.threads, scenario.connections, seconds, output)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def measure(context: Context, running: Running, scenario: Scenario, round_number: int, label: str) -> None:
    """Warm up, then one measured load of the scenario, recorded with the peak memory seen during it."""
    settings = context.settings
    tool = "h2load" if running.target.grpc else "wrk"
    if settings.warmup > 0:
        load(context, running, scenario, settings.warmup, context.logs / f"{label}-{scenario.name}.warmup.{tool}")
    begin = time.time()
    result = load(context, running, scenario, settings.duration, context.logs / f"{label}-{scenario.name}.{tool}")
    peak = running.sampler.peak(begin, time.time())
    record = context.records.add(
        "result",
        target=running.target.name,
        scenario=scenario.name,
        round=round_number,
        batching=scenario.batching and running.target.batching,
        rows=ROWS[scenario.size],
        threads=scenario.threads,
        connections=scenario.connections,
        duration_s=round(result.seconds, 3),
        requests=result.requests,
        rps=round(result.rps, 1),
        rows_per_s=round(result.rps * ROWS[scenario.size], 1),
        p50_ms=rounded(result.p50_ms),
        p90_ms=rounded(result.p90_ms),
        p99_ms=rounded(result.p99_ms),
        mean_ms=round(result.mean_ms, 3),
        max_ms=round(result.max_ms, 3),
        errors=result.errors,
        non_2xx=result.non_2xx,
        socket_errors=result.socket_errors,
        no_message=result.no_message,
        peak_rss_mib=None if peak is None else peak.rss_mib,
        peak_anon_mib=None if peak is None else peak.anon_mib,
    )
    logger.info(
        "%s %s: %.0f req/s, mean %.2f ms, p50 %s ms, p99 %s ms, errors %d, peak RSS %s MiB",
        running.target.name, scenario.name, record["rps"], record["mean_ms"], shown(record["p50_ms"]),
        shown(record["p99_ms"]), record["errors"], record["peak_rss_mib"],
    )  # fmt: skip


def session(context: Context, target: Target, scenarios: list[Scenario], round_number: int, batching: bool) -> None:
    """Start the target once (with our batching settings if asked) and run the scenarios on it."""
    label = f"{target.name}{'-batching' if batching else ''}-r{round_number}"
    names = [scenario.name for scenario in scenarios]
    stage = "start"
    try:
        with started(context, target, label, batching) as running:
            record_start(context, running, round_number, batching)
            stage = "verify"
            verify(context, running)
            for scenario in scenarios:
                stage = f"load {scenario.name}"
                measure(context, running, scenario, round_number, label)
                if not running.server.group_alive():
                    raise LoadFailed(f"the server exited during {scenario.name} (log: {running.server.log})")
                stage = f"verify after {scenario.name}"
                verify(context, running, f" after {scenario.name}")
    except (StartFailed, WrongAnswer, LoadFailed, OSError) as error:
        context.records.failure(target.name, stage, str(error), round=round_number, scenarios=names)


def record_start(context: Context, running: Running, round_number: int, batching: bool) -> None:
    context.records.add(
        "start",
        target=running.target.name,
        round=round_number,
        batching=batching,
        startup_s=round(running.startup_s, 3),
        idle_rss_mib=running.idle.rss_mib,
        idle_anon_mib=running.idle.anon_mib,
        processes=running.idle.processes,
    )
    logger.info(
        "%s (round %d%s): ready in %.2f s, idle RSS %.1f MiB in %d processes",
        running.target.name, round_number, ", batching" if batching else "", running.startup_s,
        running.idle.rss_mib, running.idle.processes,
    )  # fmt: skip


def bench_target(context: Context, target: Target, scenarios: list[Scenario], round_number: int) -> None:
    """A target's scenarios in one round: ours restarts with its batching settings for the batching ones."""
    with_batching = [s for s in scenarios if s.batching and target.batching]
    as_is = [s for s in scenarios if s not in with_batching]
    if as_is:
        session(context, target, as_is, round_number, batching=False)
    if with_batching:
        session(context, target, with_batching, round_number, batching=True)
