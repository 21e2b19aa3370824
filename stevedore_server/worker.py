"""A model's worker process: ``python -m stevedore_server.worker``, the command the server starts in the model's
environment. Its serving side is ``processes/worker.py``; its ``job`` mode is the jobs layer's
(``jobs.child.run_in_worker``). The path stays as it is: an environment of its own may hold another release of
stevedore-server."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from stevedore_server.processes.worker import main


def job(connection: Connection, orders: dict[str, Any]) -> None:
    from stevedore_server.jobs.child import run_in_worker

    run_in_worker(connection, orders)


if __name__ == "__main__":
    main({"job": job})
