"""One start of one target: start it, time it to ready, check its answers, load it, stop it."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import breakdown, grpc_client
from .client import NotReady, send, wait_ready
from .fixtures import Fixtures, WrongAnswer, check_answer
from .h2load import run_h2load
from .load import LoadFailed, LoadResult, RequestFiles, run_wrk
from .procs import Memory, Server, free_ports, tree_cpu_seconds, tree_memory
from .records import Records
from .sampler import MemorySampler
from .scenarios import ROWS, Scenario
from .settings import BenchSettings
from .targets import Launch, Target

logger = logging.getLogger("bench")
#: Seconds a target's companion (the OTLP receiver) has to listen on its port.
COMPANION_TIMEOUT = 30.0
#: Counters of ours read from /metrics before a target is stopped: what its tracing and payload log dropped.
DROP_COUNTERS = ("stevedore_trace_spans_dropped_total", "stevedore_payload_log_dropped_total")


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
    tools = context.venvs.get("tools")
    return Launch(context.venvs[target.venv], free_ports(target.ports), context.fixtures.model, work, config, tools)


@contextmanager
def companion_of(context: Context, target: Target, launch: Launch, label: str) -> Iterator[Server | None]:
    """The target's companion (the OTLP receiver), listening on the target's last port before the target starts,
    stopped after it (so that the spans the target sends as it stops still arrive); None for most targets."""
    if target.companion is None:
        yield None
        return
    argv = target.companion(launch)
    companion = Server(
        f"{target.name}-companion", argv, dict(os.environ), launch.work, context.logs / f"{label}.companion.log"
    )
    try:
        wait_listening(companion, launch.ports[-1])
        yield companion
    finally:
        companion.stop(context.settings.stop_grace)


def wait_listening(server: Server, port: int) -> None:
    deadline = time.monotonic() + COMPANION_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not server.alive():
                raise StartFailed(f"{server.name} exited: {last_line(server.log)!r} (log: {server.log})") from None
            time.sleep(0.05)
    raise StartFailed(f"{server.name} did not listen on port {port} within {COMPANION_TIMEOUT:.0f} s")


@contextmanager
def started(context: Context, target: Target, label: str, batching: bool) -> Iterator[Running]:
    """A ready server for the block; stopped (its whole process group) however the block ends."""
    launch = launch_for(context, target, label, batching)
    try:
        target.prepare(launch)
        env = {**os.environ, **target.environment(launch)}
        argv = target.argv(launch)
    except OSError as error:
        raise StartFailed(f"{type(error).__name__}: {error}") from None
    with companion_of(context, target, launch, label) as companion:
        try:
            server = Server(target.name, argv, env, launch.work, context.logs / f"{label}.server.log")
        except OSError as error:
            raise StartFailed(f"{type(error).__name__}: {error}") from None
        sampler = MemorySampler(server.pid, context.settings.sample_interval)
        drops: dict[str, float] = {}
        try:
            ready_url = f"http://127.0.0.1:{launch.port}{target.ready_path}"
            startup = wait_ready(ready_url, server, context.settings.startup_timeout)
            time.sleep(1.0)  # let start-up work that follows readiness settle before reading idle memory
            yield Running(target, server, sampler, launch.ports, startup, tree_memory(server.pid))
            drops = read_drops(f"http://127.0.0.1:{launch.port}/metrics") if target.venv.startswith("ours") else {}
        except NotReady as error:
            raise StartFailed(f"{error}; it said: {last_line(server.log)!r} (log: {server.log})") from None
        finally:
            sampler.stop()
            server.stop(context.settings.stop_grace)
        if companion is not None:  # its CPU time, before it stops: what receiving the spans cost the machine
            drops["receiver_cpu_s"] = round(tree_cpu_seconds(companion.pid), 2)
    record_leftovers(context, target, launch, label, drops)


def read_drops(metrics_url: str) -> dict[str, float]:
    """Our drop counters, summed over their labels (the reasons); {} where /metrics does not answer."""
    try:
        answer = send(metrics_url, timeout=10)
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in answer.body.decode(errors="replace").splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in DROP_COUNTERS:
            key = name.removeprefix("stevedore_")
            found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def record_leftovers(context: Context, target: Target, launch: Launch, label: str, drops: dict[str, float]) -> None:
    """What the target left (spans its receiver got, payload log lines) and what it dropped, once stopped."""
    left = target.leftovers(launch)
    if left or any(drops.values()):
        context.records.add("leftovers", target=target.name, label=label, **left, **drops)
        logger.info("%s: %s", label, ", ".join(f"{key} {value}" for key, value in {**left, **drops}.items()))


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
    model = running.target.stats_model
    before = None if model is None else breakdown.read(running.url(""), model)
    begin, cpu_before = time.time(), tree_cpu_seconds(running.server.pid)
    result = load(context, running, scenario, settings.duration, context.logs / f"{label}-{scenario.name}.{tool}")
    cpu = tree_cpu_seconds(running.server.pid) - cpu_before
    peak = running.sampler.peak(begin, time.time())
    after = breakdown.read(running.url(""), model) if model is not None and isinstance(before, dict) else before
    server = breakdown.between(before, after)
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
        cpu_us_per_request=round(cpu / result.requests * 1e6, 1) if result.requests else None,
        **server,
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
