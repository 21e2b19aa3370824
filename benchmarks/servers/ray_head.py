"""A single-node Ray cluster for one start of a Ray target, and an application deployed on it.

Run in a Ray environment of the benchmark, as the target's command:

    python ray_head.py --ports GCS,CLIENT,AGENT,METRICS,ENV_AGENT --num-cpus 2 --work DIR -- DEPLOY...

1. starts ``ray start --head --block`` as a child, in this process group, so
   that the benchmark stops the whole cluster by stopping the group; the node
   on 127.0.0.1, the given ports where Ray would take fixed ones (Ray's own
   gRPC servers still bind every interface: Ray has no option to narrow them);
2. once the head's GCS port accepts connections, runs DEPLOY (which returns
   once its application is running) with ``RAY_ADDRESS`` set to the head;
3. waits for the head to exit. On SIGTERM (the benchmark's stop), it waits
   for the head's own shutdown, keeps Ray's logs in DIR/ray-logs and removes
   the cluster's temporary directory.

Ray's temporary directory is a short one in /tmp (its AF_UNIX socket paths
must fit in 107 bytes) and ``HOME`` is DIR/home: a ``~/.ray`` of the machine
(an auth token) would change how the cluster starts. The head does not drain
on SIGTERM (``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``): by default it waits
up to 30 s for Serve to quiesce, longer than the benchmark's STOP_GRACE, and
nothing needs draining when the benchmark is done with a target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

LOOPBACK = "127.0.0.1"
#: Seconds the head's GCS has to accept connections.
HEAD_TIMEOUT = 120.0
#: Seconds the head has to stop its processes after SIGTERM before its logs are copied anyway.
STOP_WAIT = 8.0
#: No usage report; no draining on SIGTERM (see above).
RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


class Stopped(Exception):
    """SIGTERM: unwind, so that the cluster's directory is cleaned on the way out."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped()


def head_command(ray: Path, ports: list[int], num_cpus: int, temp_dir: Path) -> list[str]:
    gcs, client, agent, metrics, env_agent = ports
    return [
        str(ray), "start", "--head", "--block", "--num-cpus", str(num_cpus), "--node-ip-address", LOOPBACK,
        "--port", str(gcs), "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(env_agent),
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp_dir),
    ]  # fmt: skip


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_head(head: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + HEAD_TIMEOUT
    while not accepts(port):
        if head.poll() is not None:
            raise SystemExit(f"ray_head: ray start exited with status {head.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"ray_head: the head's GCS did not listen on {port} within {HEAD_TIMEOUT:g} s")
        time.sleep(0.2)


def keep_logs(temp_dir: Path, work: Path) -> None:
    logs = temp_dir / "session_latest" / "logs"
    if logs.is_dir():
        shutil.copytree(logs, work / "ray-logs", dirs_exist_ok=True)
    shutil.rmtree(temp_dir, ignore_errors=True)


def serve(args: argparse.Namespace) -> int:
    ports = [int(port) for port in args.ports.split(",")]
    home = args.work / "home"
    home.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {**os.environ, **RAY_ENVIRONMENT, "HOME": str(home)}
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(head_command(ray, ports, args.num_cpus, temp_dir), env=env, stdin=subprocess.DEVNULL)
    group_stopped = False
    try:
        wait_for_head(head, ports[0])
        deployed = subprocess.run(args.deploy, env={**env, "RAY_ADDRESS": f"{LOOPBACK}:{ports[0]}"}, check=False)
        if deployed.returncode != 0:
            print(f"ray_head: the deployment failed (status {deployed.returncode})", file=sys.stderr, flush=True)
            return 1
        return head.wait()
    except Stopped:
        group_stopped = True  # the benchmark's SIGTERM went to the whole group: the head has it too
        return 0
    finally:
        if not group_stopped:
            head.send_signal(signal.SIGTERM)
        stop(head)
        keep_logs(temp_dir, args.work)


def stop(head: subprocess.Popen[bytes]) -> None:
    try:
        head.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        print("ray_head: the head is still stopping; its logs may be incomplete", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ports", required=True, help="GCS,CLIENT,AGENT,METRICS,ENV_AGENT: free loopback ports")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="this start's directory: HOME and Ray's logs")
    parser.add_argument("deploy", nargs="+", help="the command that deploys the application (after --)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
