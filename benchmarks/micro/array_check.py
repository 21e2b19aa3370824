"""base/validation.py's ArrayCheck: a 1000-row table of numbers checked (and parsed) as an array, against parsing
it with orjson and validating the lists with the compiled JSON Schema, as any other payload is.

Delete ``ArrayCheck``'s fast paths when the two come close.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from stevedore_server.base.validation import ArrayCheck, SchemaValidator

ROUNDS = 7
CALLS = 200
SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "number", "minimum": 0}},
}
BODY = orjson.dumps([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 500)


def per_call(check: Callable[[], Any]) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            check()
        rounds.append((time.perf_counter() - started) / CALLS)
    return statistics.median(rounds)


def main() -> None:
    array_check, validator = ArrayCheck.of(SCHEMA), SchemaValidator(SCHEMA)
    assert array_check is not None and array_check.parse_table(BODY) is not None
    table = per_call(lambda: array_check.parse_table(BODY))
    rows = per_call(lambda: array_check.rows(BODY, orjson.loads(BODY)))
    usual = per_call(lambda: validator.validate(orjson.loads(BODY)))

    def usual_then_array() -> Any:  # what a numpy_input predictor needs without parse_table
        payload = orjson.loads(BODY)
        validator.validate(payload)
        return np.asarray(payload, dtype=np.float64)

    as_array = per_call(usual_then_array)
    print(f"a 1000-row table of numbers ({len(BODY):,} bytes), median of {ROUNDS} rounds of {CALLS}")
    print(f"  parse_table (text to a checked array):    {table * 1e6:7.1f} µs")
    print(f"  orjson, then rows (checked as an array):   {rows * 1e6:7.1f} µs")
    print(f"  orjson, then the JSON Schema validator:    {usual * 1e6:7.1f} µs")
    print(f"  the same, then np.asarray (numpy_input):   {as_array * 1e6:7.1f} µs")
    print(f"  for a numpy_input predictor, validator and asarray / parse_table: {as_array / table:5.2f}x")
    print(f"  for any other, validator / rows: {usual / rows:5.2f}x  (each fast path pays while its ratio is over 1)")


if __name__ == "__main__":
    main()
