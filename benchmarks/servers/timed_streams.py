"""What the LLM benchmark's stream scripts share (``direct_stream.py``, ``openai_stream.py``): a stream's texts
timed, and streams made one after another for a while, one JSON line each."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

PROMPT = "Once upon a time"
MIN_CALLS = 3


def timed(start: Callable[[], Iterable[str | None]]) -> dict[str, Any]:
    """One stream, timed from ``start``'s call: the time to the first text and to the end, the texts, and the CRC-32
    of the text (the server's stream must give the same)."""
    pieces, crc, first = 0, 0, None
    began = time.perf_counter()
    for text in start():
        if text:
            if first is None:
                first = time.perf_counter()
            pieces += 1
            crc = zlib.crc32(text.encode(), crc)
    ended = time.perf_counter()
    ttft = (first if first is not None else ended) - began
    return {"ttft_us": round(ttft * 1e6, 1), "total_us": round((ended - began) * 1e6, 1), "pieces": pieces,
            "text_crc": crc}  # fmt: skip


def repeated(start: Callable[[], Iterable[str | None]], seconds: float) -> None:
    """Streams one after another for ``seconds`` (at least ``MIN_CALLS``) after one not measured, each printed."""
    timed(start)
    calls = 0
    stop_at = time.monotonic() + seconds
    while calls < MIN_CALLS or time.monotonic() < stop_at:
        print(json.dumps(timed(start)), flush=True)
        calls += 1
