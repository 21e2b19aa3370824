"""Streams read by the official ``openai`` SDK: what an application written against the OpenAI API sees.

Run in the benchmark's ``llm-client`` environment:

    python openai_stream.py BASE_URL MODEL KIND PARAMS_JSON SECONDS

KIND ``complete`` streams ``client.completions.create``, ``chat`` ``client.chat.completions.create``, with the
benchmark's prompt and PARAMS_JSON (``max_tokens``, ...), one stream after another on the SDK's kept-alive
connection, for SECONDS (at least 3 streams) after one not measured. Prints one JSON line a stream, as
``direct_stream.py`` does: ``{"ttft_us", "total_us", "pieces", "text_crc"}``, timed from the call.
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from typing import Any

from openai import OpenAI

PROMPT = "Once upon a time"
MIN_CALLS = 3


def texts(client: OpenAI, model: str, kind: str, params: dict[str, Any]) -> Any:
    if kind == "chat":
        messages = [{"role": "user", "content": PROMPT}]
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **params):
            yield from (choice.delta.content for choice in chunk.choices)
    else:
        for chunk in client.completions.create(model=model, prompt=PROMPT, stream=True, **params):
            yield from (choice.text for choice in chunk.choices)


def one_stream(client: OpenAI, model: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    pieces, crc, first = 0, 0, None
    began = time.perf_counter()
    for text in texts(client, model, kind, params):
        if text:
            if first is None:
                first = time.perf_counter()
            pieces += 1
            crc = zlib.crc32(text.encode(), crc)
    ended = time.perf_counter()
    ttft = (first if first is not None else ended) - began
    return {"ttft_us": round(ttft * 1e6, 1), "total_us": round((ended - began) * 1e6, 1), "pieces": pieces,
            "text_crc": crc}  # fmt: skip


def main(base_url: str, model: str, kind: str, params_json: str, seconds: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)
    params = json.loads(params_json)
    one_stream(client, model, kind, params)
    calls = 0
    stop_at = time.monotonic() + float(seconds)
    while calls < MIN_CALLS or time.monotonic() < stop_at:
        print(json.dumps(one_stream(client, model, kind, params)), flush=True)
        calls += 1


if __name__ == "__main__":
    main(*sys.argv[1:6])
