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
from typing import Any

from openai import OpenAI
from timed_streams import PROMPT, repeated


def texts(client: OpenAI, model: str, kind: str, params: dict[str, Any]) -> Any:
    if kind == "chat":
        messages = [{"role": "user", "content": PROMPT}]
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **params):
            yield from (choice.delta.content for choice in chunk.choices)
    else:
        for chunk in client.completions.create(model=model, prompt=PROMPT, stream=True, **params):
            yield from (choice.text for choice in chunk.choices)


def main(base_url: str, model: str, kind: str, params_json: str, seconds: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)
    params = json.loads(params_json)
    repeated(lambda: texts(client, model, kind, params), float(seconds))


if __name__ == "__main__":
    main(*sys.argv[1:6])
