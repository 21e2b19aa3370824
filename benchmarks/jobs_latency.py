"""Does a CPU-bound training slow predictions down? Predict latency (p50, p99) with and without a job.

Serves the trainer test plugin's models on a real loopback socket (uvicorn on a
thread of this process: ``loopback.ThreadServer``), times sequential one-row
predicts of ``iris-trainer``, then starts a ``misbehaving-trainer`` job that
busy-loops on a CPU (in its own process, as every job) and times them again.
On a machine with a free core the two should be close; the job's process takes
a core of its own, never the server's threads.

    PYTHONPATH=. python benchmarks/jobs_latency.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from stevedore_server.base.settings import Settings
from stevedore_server.kit.loopback import ThreadServer

CALLS = 2000
ROW = [[5.1, 3.5, 1.4, 0.2]]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "installed" / "trainer"))


def latencies(client: httpx.Client) -> list[float]:
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        client.post("/models/iris-trainer/predict", json=ROW).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def report(label: str, times: list[float]) -> None:
    cuts = statistics.quantiles(times, n=100)
    print(f"{label:<22} p50 {cuts[49] * 1e3:7.3f} ms   p99 {cuts[98] * 1e3:7.3f} ms")


def main() -> None:
    from stevedore_test_trainer import IrisTrainer, MisbehavingTrainer

    with tempfile.TemporaryDirectory() as state_dir:
        settings = Settings(state_dir=state_dir, grpc_port=0, access_log=False)
        server = ThreadServer.serving([IrisTrainer(), MisbehavingTrainer()], settings, timeout=60)
        try:
            with httpx.Client(base_url=server.url) as client:
                latencies(client)  # warm up
                report("no job", latencies(client))
                job = client.post("/models/misbehaving-trainer/train", json={"mode": "busy"}).json()
                while client.get(f"/jobs/{job['id']}").json()["message"] != "hanging":
                    time.sleep(0.1)
                report("a CPU-bound job", latencies(client))
                client.delete(f"/jobs/{job['id']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
