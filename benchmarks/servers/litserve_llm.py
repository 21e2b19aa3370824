"""LitServe serving the bench plugin's work (``plugins/token_stream``'s ``compute.py``, on ``PYTHONPATH``) with its
OpenAI specs: the LLM benchmark's peer (``loadbench/llm.py``). Run in the benchmark's ``litserve`` environment:

    python litserve_llm.py PORT MAX_BATCH_SIZE

- ``POST /v1/chat/completions`` (``OpenAISpec``: chat only) streams ``compute.pieces(max_tokens)``, the very
  generator ``token-stream`` streams;
- ``POST /v1/embeddings`` (``OpenAIEmbeddingSpec``) embeds with ``compute.HashedEncoder``, as ``hashed-embed``
  does, batched up to MAX_BATCH_SIZE requests (``batch_timeout`` 1 ms, as ours) when above 1;
- ``GET /health`` answers 200 once the workers are up.

One API server process and one inference worker a LitAPI, on the CPU: LitServe's defaults on this machine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import litserve as ls
from stevedore_bench_token_stream.compute import HashedEncoder, pieces

BATCH_TIMEOUT = 0.001


class TokenStreamAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, request: Any, context: dict[str, Any]) -> Iterator[str]:
        yield from pieces(context.get("max_tokens"))


class HashedEmbedAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = HashedEncoder()

    def predict(self, inputs: Any) -> Any:
        # Batched, ``inputs`` holds one request's input a request (each a string: one text a request here).
        return self.model.embed(list(inputs) if isinstance(inputs, list) else [inputs])

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output}


def main(port: str, max_batch_size: str) -> None:
    batch = int(max_batch_size)
    embed = HashedEmbedAPI(spec=ls.OpenAIEmbeddingSpec(), max_batch_size=batch, batch_timeout=BATCH_TIMEOUT)
    server = ls.LitServer([TokenStreamAPI(spec=ls.OpenAISpec()), embed], accelerator="cpu", timeout=120)
    server.run(host="127.0.0.1", port=int(port), generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main(*sys.argv[1:3])
