"""A model's worker process: ``python -m stevedore_server.worker``, the command the server starts in the model's
environment (its code is ``processes/worker.py``). The path stays as it is: an environment of its own may hold
another release of stevedore-server."""

from __future__ import annotations

from stevedore_server.processes.worker import main

if __name__ == "__main__":
    main()
