"""``token-stream`` (chat and completions: ``compute.pieces``) and ``hashed-embed`` (embeddings:
``compute.HashedEncoder``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stevedore_server import Predictor

from .compute import HashedEncoder, pieces

TEXTS = {"type": "array", "minItems": 1, "items": {"type": "string"}}


class TokenStream(Predictor):
    name = "token-stream"
    description = "Streams max_tokens pieces of text at once, doing nothing else: the server's cost alone."
    predict_schema = TEXTS
    predict_fixture = ["Hello"]  # noqa: RUF012
    output_schema = {"type": "array", "items": {"type": "integer"}}  # noqa: RUF012

    def run_predict(self, X: Any) -> Any:
        return [len(text.split()) for text in X]

    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[str]:
        return pieces(params.get("max_tokens"))

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[str]:
        return pieces(params.get("max_tokens"))


class HashedEmbed(Predictor):
    name = "hashed-embed"
    description = "Hashed word features through two dense layers: an embedding with a small encoder's cost a call."
    predict_schema = TEXTS
    predict_fixture = ["Hello world"]  # noqa: RUF012

    def load(self) -> None:
        self.model = HashedEncoder()

    def run_predict(self, X: Any) -> Any:
        return self.model.embed(list(X))

    def embed(self, texts: list[str], params: dict[str, Any]) -> Any:
        return self.model.embed(texts)
