"""The two models of the plugin: ``ngram-lm`` (chat, completions, predict) and ``ngram-embed`` (embeddings,
predict), both fitted on Shakespeare by ``train.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stevedore_server import Generation, Predictor
from stevedore_server.base.errors import BadRequest

from .embedding import Embedder
from .generation import Sampling, chat_prompt, chat_tokens, generate
from .ngram import NgramModel

#: Words of a predict continuation when the item does not say.
PREDICT_MAX_TOKENS = 32


class NgramLM(Predictor):
    """A word trigram model with backoff: continues a prompt with words of the text."""

    name = "ngram-lm"
    version = "1"
    description = (
        "A word trigram language model with backoff, trained on 300 kB of Shakespeare (Coriolanus, Richard III): "
        "continues a prompt in his words. Predict takes an array of prompts (strings, or objects with prompt, "
        "max_tokens, temperature, top_p, seed; greedy by default) and gives one continuation a prompt; chat and "
        "completions stream a word at a time on the OpenAI-compatible routes."
    )
    predict_schema = "schemas/lm-predict.json"
    predict_fixture = "fixtures/lm-predict.json"
    output_schema = "schemas/lm-output.json"
    artifact = "ngram-lm.npz"
    capabilities = ("chat", "complete")

    def load(self) -> None:
        self.model = NgramModel.load(self.resource_path(self.artifact))

    def complete(self, prompt: str, params: dict[str, Any]) -> Iterator[Generation]:
        # Not a generator itself: bad parameters are refused when called, before any piece is streamed.
        return generate(self.model, prompt, Sampling.of(params))

    def chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[Generation]:
        return generate(self.model, chat_prompt(messages), Sampling.of(params), chat_tokens(messages))

    def run_predict(self, items: list[str | dict[str, Any]]) -> list[str]:
        return [self.continuation(item) for item in items]

    def continuation(self, item: str | dict[str, Any]) -> str:
        """One predict item's continuation, without the space before its first word."""
        prompt, params = (item, {}) if isinstance(item, str) else (item["prompt"], item)
        sampling = Sampling.of({"max_tokens": PREDICT_MAX_TOKENS, **params}, temperature=0.0)
        return "".join(piece.text for piece in generate(self.model, prompt, sampling)).lstrip()


class NgramEmbed(Predictor):
    """Latent semantic analysis: TF-IDF then a truncated SVD, L2-normalised."""

    name = "ngram-embed"
    version = "1"
    description = (
        "Text embeddings by latent semantic analysis (TF-IDF, then a 64-component truncated SVD) fitted on the "
        "same Shakespeare: texts of like subject get close vectors (cosine). Predict takes an array of texts and "
        "gives a unit vector of 64 numbers each (zeros for a text of no known word); embeddings take "
        "`dimensions` (1 to 64) to keep the first components."
    )
    predict_schema = "schemas/embed-predict.json"
    predict_fixture = "fixtures/embed-predict.json"
    output_schema = "schemas/embed-output.json"
    artifact = "ngram-embed.npz"
    capabilities = ("embed",)
    # A text takes some microseconds: concurrent requests are merged into one call.
    max_batch_size = 32
    max_batch_time = 0.002

    def load(self) -> None:
        self.model = Embedder.load(self.resource_path(self.artifact))

    def run_predict(self, texts: list[str]) -> NDArray[np.float64]:
        embedded: NDArray[np.float64] = self.model.embed(texts)
        return embedded

    def embed(self, texts: list[str], params: dict[str, Any]) -> NDArray[np.float64]:
        if not all(isinstance(text, str) for text in texts):
            raise BadRequest("input must be strings")
        embedded: NDArray[np.float64] = self.model.embed(texts, self.dimensions(params.get("dimensions")))
        return embedded

    def dimensions(self, value: Any) -> int | None:
        """``dimensions``: at most the model's own (it can shorten its vectors, not lengthen them)."""
        size: int = self.model.dimensions
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= size:
            raise BadRequest(f"dimensions must be an integer from 1 to {size} for {self.name}, not {value!r}")
        return value


def predictors() -> list[Predictor]:
    """Target of the ``text`` entry point: both models."""
    return [NgramLM(), NgramEmbed()]
