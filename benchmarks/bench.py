"""Run the benchmark (what ``make bench`` does): ``python3 benchmarks/bench.py``.

Settings come from the environment (ROUNDS, DURATION, TARGETS, SOAK, ...): see README.md.
"""

from __future__ import annotations

import sys

from loadbench.main import main

if __name__ == "__main__":
    sys.exit(main())
