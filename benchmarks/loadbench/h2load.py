"""Load a gRPC target with h2load (one pre-encoded ModelInfer call, closed loop) and read what it measured.

wrk speaks HTTP/1.1 only, and a Python client would measure itself: h2load
(nghttp2's, in C, threads like wrk's) posts the framed ModelInferRequest over
HTTP/2 with gRPC's headers, one call in flight per connection (``-m 1``), each
connection sending its next call when the answer comes, as wrk does.

h2load knows HTTP only. A gRPC error is an HTTP 200 whose trailers say so, and
carries no message; so the answers' bytes tell: every right answer of a size
is as long as the one the real client checked, and ``no_message`` counts the
2xx answers the bytes received do not account for. h2load prints a mean and a
maximum latency, no percentiles: those stay None.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from .client import check_loopback
from .load import LoadFailed, LoadResult, RequestFiles

logger = logging.getLogger("bench")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
FINISHED = re.compile(r"^finished in ([\d.]+)(us|ms|s),")
REQUESTS = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout")  # fmt: skip
STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
DATA = re.compile(r"^traffic: .*\((\d+)\) data")
LATENCY = re.compile(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)")


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


def h2load_version() -> str | None:
    if not h2load_available():
        return None
    found = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
    return found.stdout.strip() or None


def run_h2load(
    url: str, request: RequestFiles, threads: int, connections: int, seconds: float, output: Path,
    answer_bytes: int | None,
) -> LoadResult:  # fmt: skip
    """Run h2load for ``seconds`` (whole seconds, at least 1); its output is kept in ``output``.

    ``answer_bytes``: the framed size of a right answer (from the check), to count answers without one.
    """
    duration = max(1, round(seconds))
    headers = [arg for line in request.headers.read_text().splitlines() if line for arg in ("-H", line)]
    argv = [
        "h2load", "-D", str(duration), "-t", str(threads), "-c", str(connections), "-m", "1",
        "-d", str(request.body), *headers, check_loopback(url),
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"h2load did not finish within {duration + 60} s") from None
    output.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return parse(done.stdout, output, answer_bytes)


def milliseconds(value: str, unit: str) -> float:
    return float(value) * UNITS[unit]


def parse(stdout: str, output: Path, answer_bytes: int | None) -> LoadResult:
    found: dict[str, re.Match[str]] = {}
    for line in stdout.splitlines():
        for name, pattern in (("finished", FINISHED), ("requests", REQUESTS), ("status", STATUS),
                              ("data", DATA), ("latency", LATENCY)):  # fmt: skip
            if match := pattern.match(line.strip()):
                found[name] = match
    missing = {"finished", "requests", "status", "data", "latency"} - set(found)
    if missing:
        raise LoadFailed(f"h2load printed no {', '.join(sorted(missing))} (see {output})")
    done, errored, timeouts = (int(found["requests"][group]) for group in (3, 6, 7))
    answered_2xx = int(found["status"][1])
    latency = found["latency"]
    return LoadResult(
        requests=done,
        seconds=milliseconds(*found["finished"].groups()) / 1000,
        non_2xx=max(0, done - answered_2xx - errored),
        socket_errors=max(errored, timeouts),
        p50_ms=None,
        p90_ms=None,
        p99_ms=None,
        mean_ms=milliseconds(latency[5], latency[6]),
        max_ms=milliseconds(latency[3], latency[4]),
        no_message=without_message(answered_2xx, int(found["data"][1]), answer_bytes, output),
    )


def without_message(answered_2xx: int, data_bytes: int, answer_bytes: int | None, output: Path) -> int:
    """The 2xx answers that the answer bytes received cannot hold a right answer for."""
    if not answer_bytes:
        return 0
    if data_bytes % answer_bytes:
        logger.warning(
            "%s: %d bytes of answers are not a whole number of %d-byte answers: answers of another size came, "
            "the count of answers without a message is approximate", output.name, data_bytes, answer_bytes,
        )  # fmt: skip
    return max(0, answered_2xx - data_bytes // answer_bytes)
