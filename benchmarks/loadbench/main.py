"""``make bench``: install every target, then rounds of A B A B over the targets, then the table.

With SOAK=1, the soak runs instead of the comparison; with LAZY=1, the benchmark of lazy models (lazy.py); with
PIPELINES=1, the benchmark of pipelines (pipelines.py); with LLM=1, the OpenAI-compatible routes' (llm.py).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from . import grpc_client
from .breakdown import breakdown_text
from .fixtures import FixtureError, Fixtures
from .h2load import h2load_available, h2load_version
from .lazy import bench as lazy_bench
from .llm import bench as llm_bench
from .load import RequestFiles, wrk_available
from .pipelines import bench as pipelines_bench
from .records import Records
from .report import leftovers_text, scenario_summaries, table, target_summaries
from .scenarios import SCENARIOS
from .sessions import Context, bench_target
from .settings import REPO_DIR, BenchSettings, SettingError
from .soak import soak, soak_table
from .targets import TARGETS, Target
from .venvs import ENVIRONMENTS, InstallFailed, ensure

logger = logging.getLogger("bench")
Requests = dict[tuple[str, str], RequestFiles]  # (target, size) -> request files


class Interrupted(Exception):
    """SIGTERM: unwind like Ctrl-C, so that every server is stopped on the way out."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def configure_logging(log_file: Path) -> None:
    formatter = logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def ensure_debian_tool(command: str, package: str, log: Path) -> None:
    """A load generator from Debian, installed with apt-get when missing (through sudo unless root)."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", package]
    logger.info("%s is missing: %s", command, " ".join(install))
    with log.open("a") as output:
        for attempt in ([install], [[*sudo, "apt-get", "update", "-q"], install]):
            if all(subprocess.run(cmd, env=env, stdout=output, stderr=output).returncode == 0 for cmd in attempt):
                return
    raise SystemExit(f"{command} is missing and apt-get could not install {package} (log: {log})")


def ensure_load_generators(settings: BenchSettings, logs: Path) -> None:
    """wrk always (Debian's wrk); h2load (Debian's nghttp2-client) when a gRPC target is to run."""
    if not wrk_available():
        ensure_debian_tool("wrk", "wrk", logs / "install-wrk.log")
    own_servers = settings.lazy or settings.pipelines or settings.llm
    names = () if own_servers else (settings.soak_target,) if settings.soak else settings.targets
    if any(TARGETS[name].grpc for name in names if name in TARGETS) and not h2load_available():
        ensure_debian_tool("h2load", "nghttp2-client", logs / "install-h2load.log")


def plain(value: object) -> object:
    """A setting as JSON can hold it."""
    if isinstance(value, tuple):
        return list(value)
    return str(value) if isinstance(value, Path) else value


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        found = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True)
        return found.stdout.strip()

    changed = git("status", "--porcelain", "--", "stevedore_server", "contrib", "pyproject.toml")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(changed)}


def wrk_version() -> str:
    found = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (found.stdout + found.stderr).split("\n", 1)[0].strip()


def select_targets(records: Records, names: tuple[str, ...]) -> list[Target]:
    selected = []
    for name in names:
        if name in TARGETS:
            selected.append(TARGETS[name])
        else:
            records.failure(name, "setup", f"no such target; known: {', '.join(TARGETS)}")
    return selected


def install(records: Records, settings: BenchSettings, targets: list[Target], logs: Path) -> dict[str, Path]:
    """Every environment the targets need; a target whose environment fails gets a failure line."""
    venvs = {}
    for name in dict.fromkeys(["tools", *(target.venv for target in targets)]):
        users = [target.name for target in targets if target.venv == name]
        logger.info("environment %s: checking (log: %s)", name, logs / f"install-{name}.log")
        try:
            installed = ensure(ENVIRONMENTS[name], settings.venvs, settings.python, logs / f"install-{name}.log")
        except InstallFailed as error:
            for user in users or [name]:
                records.failure(user, "install", str(error))
            continue
        venvs[name] = installed.path
        took = "up to date" if installed.install_seconds is None else f"installed in {installed.install_seconds:.0f} s"
        logger.info("environment %s: %s", name, took)
        records.add("install", environment=name, targets=users, install_s=installed.install_seconds)
        records.add("versions", environment=name, targets=users, versions=installed.versions)
    return venvs


def write_requests(target: Target, fixtures: Fixtures, directory: Path, tools_python: Path, log: Path) -> Requests:
    """The target's request bodies and headers; a gRPC target's are encoded in the tools environment."""
    payload = target.payload
    if isinstance(payload, grpc_client.GrpcPayload):
        encoded = grpc_client.encode(tools_python, fixtures.rows_file, payload, directory / target.name, log)
        return {(target.name, size): files for size, files in encoded.items()}
    return {
        (target.name, size): RequestFiles.write(payload.request(rows), directory / target.name, size)
        for size, rows in fixtures.rows.items()
    }


def prepare(settings: BenchSettings, run_dir: Path, records: Records) -> tuple[Context, list[Target]]:
    logs, work = run_dir / "logs", run_dir / "work"
    targets = select_targets(records, (settings.soak_target,) if settings.soak else settings.targets)
    venvs = install(records, settings, targets, logs)
    if "tools" not in venvs:
        raise SystemExit("the tools environment could not be installed: nothing can be checked")
    try:
        fixtures = Fixtures.export(venvs["tools"] / "bin" / "python", run_dir / "model", logs / "export-model.log")
    except FixtureError as error:
        raise SystemExit(str(error)) from None
    ready: list[Target] = []
    requests: Requests = {}
    tools_python = venvs["tools"] / "bin" / "python"
    for target in (target for target in targets if target.venv in venvs):
        try:
            requests |= write_requests(target, fixtures, run_dir / "requests", tools_python, logs / "encode-grpc.log")
        except OSError as error:
            records.failure(target.name, "setup", str(error))
            continue
        ready.append(target)
    return Context(settings, records, fixtures, venvs, requests, logs, work), ready


def compare(context: Context, targets: list[Target], run_dir: Path) -> None:
    settings = context.settings
    scenarios = [SCENARIOS[name] for name in settings.scenarios]
    for round_number in range(1, settings.rounds + 1):
        logger.info("round %d of %d", round_number, settings.rounds)
        for target in targets:
            bench_target(context, target, scenarios, round_number)
    records = context.records.items
    per_scenario = scenario_summaries(records)
    per_target = target_summaries(records, list(dict.fromkeys(settings.targets)))
    with (run_dir / "summary.jsonl").open("w") as output:
        output.writelines(json.dumps(line) + "\n" for line in [*per_scenario, *per_target])
    heading = (
        f"{settings.rounds} round(s) interleaved, {settings.duration:g} s per scenario after {settings.warmup:g} s "
        f"of warm-up; medians over the rounds, errors summed; RSS in MiB summed over the server's process tree; "
        f"xfloor, xmlsrv, xmlgrpc: the figure divided by the floor's, by MLServer's, by MLServer's over gRPC; "
        f"h2load (gRPC) gives a mean latency and no percentiles"
    )
    blocks = [table(per_scenario, per_target, heading), breakdown_text(records), leftovers_text(records)]
    text = "\n\n".join(block for block in [*blocks, versions_text(records)] if block)
    (run_dir / "table.txt").write_text(text + "\n")
    print(text)


def versions_text(records: list[dict[str, Any]]) -> str:
    lines = ["versions:"]
    for record in records:
        if record["kind"] == "versions":
            listed = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
            lines.append(f"  {record['environment']:<13} {listed}")
    return "\n".join(lines)


def record_settings(records: Records, settings: BenchSettings) -> None:
    records.add(
        "settings",
        **{key: plain(value) for key, value in vars(settings).items()},
        cpus=os.cpu_count(),
        python_version=platform.python_version(),
        wrk=wrk_version(),
        h2load=h2load_version(),
        repository=git_revision(),
        date=time.strftime("%F %T"),
    )


def main() -> int:
    try:
        settings = BenchSettings.from_env()
    except SettingError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    run_dir = settings.out / time.strftime("%Y%m%d-%H%M%S")
    (run_dir / "logs").mkdir(parents=True)
    configure_logging(run_dir / "bench.log")
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    logger.info("results: %s", run_dir)
    ensure_load_generators(settings, run_dir / "logs")
    records = Records(run_dir / "raw.jsonl")
    record_settings(records, settings)
    try:
        if settings.lazy:  # its own servers and environment: none of the comparison's targets
            print(lazy_bench(settings, run_dir, records))
            logger.info("done in %.0f s; results in %s", time.monotonic() - started, run_dir)
            return 0
        if settings.pipelines:  # the same: its own server (loadbench/pipelines.py)
            print(pipelines_bench(settings, run_dir, records))
            logger.info("done in %.0f s; results in %s", time.monotonic() - started, run_dir)
            return 0
        if settings.llm:  # the same: its own servers (loadbench/llm.py)
            print(llm_bench(settings, run_dir, records))
            logger.info("done in %.0f s; results in %s", time.monotonic() - started, run_dir)
            return 0
        context, targets = prepare(settings, run_dir, records)
        logger.info("set up in %.0f s; measuring: %s", time.monotonic() - started, " ".join(t.name for t in targets))
        if settings.soak:
            text = soak_table(soak(context), settings.soak_connections)
            (run_dir / "soak.txt").write_text(text + "\n")
            print(text)
        else:
            compare(context, targets, run_dir)
    except (KeyboardInterrupt, Interrupted):
        logger.error("interrupted: the servers are stopped; partial results in %s", run_dir / "raw.jsonl")
        return 130
    logger.info("done in %.0f s; results in %s", time.monotonic() - started, run_dir)
    return 0
