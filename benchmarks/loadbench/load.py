"""Load a server with wrk (one fixed request, closed loop) and read back what it measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .client import check_loopback
from .payloads import Request

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
MARKER = "LOAD_RESULT "


class LoadFailed(Exception):
    """wrk did not run to the end or printed no result."""


@dataclass(frozen=True)
class RequestFiles:
    """A request written out for wrk's Lua script."""

    body: Path
    headers: Path

    @classmethod
    def write(cls, request: Request, directory: Path, name: str) -> RequestFiles:
        directory.mkdir(parents=True, exist_ok=True)
        files = cls(directory / f"{name}.body", directory / f"{name}.headers")
        files.body.write_bytes(request.body)
        files.headers.write_text("".join(f"{key}: {value}\n" for key, value in request.headers.items()))
        return files


@dataclass(frozen=True)
class LoadResult:
    """What one load measured; h2load (the gRPC targets) gives no percentiles, which stay None."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float
    max_ms: float
    #: gRPC: answers of HTTP status 200 without the answer's message (a gRPC error comes so).
    no_message: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors + self.no_message


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, request: RequestFiles, threads: int, connections: int, seconds: float, output: Path
) -> LoadResult:
    """Run wrk for ``seconds`` (whole seconds, at least 1); its output is kept in ``output``."""
    duration = max(1, round(seconds))
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), check_loopback(url),
    ]  # fmt: skip
    env = {**os.environ, "LOAD_BODY": str(request.body), "LOAD_HEADERS": str(request.headers)}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"wrk did not finish within {duration + 60} s") from None
    output.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return parse(done.stdout, output)


def parse(stdout: str, output: Path) -> LoadResult:
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise LoadFailed(f"wrk printed no result (see {output})")
    raw = json.loads(lines[-1][len(MARKER) :])
    socket_errors = sum(raw[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        non_2xx=raw["non_2xx"],
        socket_errors=socket_errors,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )
