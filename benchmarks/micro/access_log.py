"""base/logs.py's short path: an access line made from its parts and handed to the ``TurnHandler``, against the
same line logged as a record (``logger.info``), in the server's own logging configuration.

Lines go to /dev/null, so what is timed is the logging, not the terminal. Delete
``AccessLog``'s short path when the two come close.
"""

from __future__ import annotations

import logging
import logging.config
import os
import statistics
import sys
import time

from stevedore_server.base.logs import ACCESS_FORMAT, AccessLog, lighten_records, logging_config

LINES = 20_000
ROUNDS = 5
ARGS = ("127.0.0.1", "POST", "/models/iris/predict", 200, 0.3)
FIELDS = {"status": 200, "duration_ms": 0.3, "route": "/models/{name}/predict"}


def per_line(write: object) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(LINES):
            write()  # type: ignore[operator]
        rounds.append((time.perf_counter() - started) / LINES)
    return statistics.median(rounds)


def main() -> None:
    sys.stderr = sys.stdout = open(os.devnull, "w")
    logging.config.dictConfig(logging_config("info"))
    lighten_records()
    logger = logging.getLogger("stevedore.access")
    access = AccessLog(logger)
    short = per_line(lambda: access.write("abc", ARGS, FIELDS))
    record = per_line(lambda: logger.info(ACCESS_FORMAT, *ARGS, extra=FIELDS))
    sys.stdout = sys.__stdout__
    print(f"an access line in the server's logging configuration, median of {ROUNDS} rounds of {LINES:,}")
    print(f"  short path (AccessLog):  {short * 1e6:6.1f} µs a line")
    print(f"  a record (logger.info):  {record * 1e6:6.1f} µs a line")
    print(f"  record / short:          {record / short:6.2f}x  (the trick pays while this is well over 1)")


if __name__ == "__main__":
    main()
