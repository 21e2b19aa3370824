"""``python -m benchmarks.soak [SECONDS]`` (``make soak``): the soak, its report printed and kept with the
servers' logs in ``build/soak/YYYYMMDD-HHMMSS/``; exit status 1 if anything is unexplained, lost, stuck or over
its bound. Seconds from the argument, else ``SOAK_DURATION``, else 600."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from .run import run_soak

DEFAULT_DURATION = 600.0
RESULTS = Path("build") / "soak"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    duration = float(arguments[0] if arguments else os.environ.get("SOAK_DURATION") or DEFAULT_DURATION)
    if duration < 60:
        print("the soak needs at least 60 seconds (two halves of a fault cycle each)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line a request otherwise
    directory = RESULTS.resolve() / time.strftime("%Y%m%d-%H%M%S")
    report = run_soak(duration, directory)
    text = report.text()
    (directory / "report.txt").write_text(text + "\n")
    print(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
