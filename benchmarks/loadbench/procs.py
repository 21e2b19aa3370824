"""Servers as process groups: free loopback ports, starting, stopping, and the memory of a process tree."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("bench")

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that nothing listens on now (the kernel's choice, so two runs do not collide)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def parent_and_session(pid: str) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after the last ")" do not.
    state, ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
    return (-1, -1) if state == "Z" else (int(ppid), int(session))


def process_tree(root: int) -> list[int]:
    """Live processes descending from root or in its session (a server started with its own session)."""
    children: dict[int, list[int]] = {}
    tree = {root}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := parent_and_session(entry)) is not None:
            children.setdefault(found[0], []).append(int(entry))
            if found[1] == root:
                tree.add(int(entry))
    todo = list(tree)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return sorted(tree)


@dataclass(frozen=True)
class Memory:
    """Resident memory summed over a process tree, in MiB, as ``ps`` would count it."""

    rss_mib: float
    #: RSS less file-backed pages: heap, Python objects, arrays. Steadier than RSS across runs.
    anon_mib: float
    processes: int


def tree_memory(root: int) -> Memory:
    rss_kib = anon_kib = processes = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                resident, shared = (int(field) for field in statm.read().split()[1:3])
        except (OSError, ValueError):
            continue  # it exited meanwhile
        rss_kib += resident * PAGE_KIB
        anon_kib += (resident - shared) * PAGE_KIB
        processes += 1
    return Memory(round(rss_kib / 1024, 1), round(anon_kib / 1024, 1), processes)


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU time the live processes of the tree have used: around a load, divided by its
    requests, what a request costs the server, which other work on the machine does not skew as it skews req/s."""
    ticks = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue  # it exited meanwhile
        utime, stime = stat[stat.rindex(")") + 2 :].split()[11:13]  # fields 14 and 15 of proc(5)
        ticks += int(utime) + int(stime)
    return ticks / CLOCK_TICKS


class Server:
    """A server started in its own session, so its whole process group can be stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid = self.process.pid
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.process.poll() is None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        # A group of zombies is not alive: only the leader is reaped by us.
        return any(parent_and_session(str(pid)) not in (None, (-1, -1)) for pid in process_tree(self.pid))

    def stop(self, grace: float) -> None:
        """SIGTERM to the process group; SIGKILL to the group and anything of the tree left after grace s."""
        tree = process_tree(self.pid)
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.group_alive():
            self.process.poll()
            time.sleep(0.1)
        if self.group_alive():
            logger.warning("%s (pid %d) still running %.0f s after SIGTERM: SIGKILL", self.name, self.pid, grace)
            self.signal_group(signal.SIGKILL)
        for pid in tree:  # whatever left the group (a daemon that made its own session)
            if pid != self.pid:
                kill_quietly(pid)
        self.process.wait()

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass  # already gone


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
