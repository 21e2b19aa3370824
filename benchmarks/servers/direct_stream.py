"""A model's text generator iterated in this process: the baseline the LLM benchmark's streams are compared with.

Run in the ``ours`` environment, the plugins on ``PYTHONPATH`` as the server has them:

    python direct_stream.py FACTORY MODEL KIND PARAMS_JSON SECONDS

FACTORY is ``module:attribute`` (a Predictor class, or a function returning predictors, as an entry point names
them); the predictor named MODEL is loaded, then its ``complete`` (KIND ``complete``) or ``chat`` (``chat``) is
called with the benchmark's prompt and PARAMS_JSON and iterated to its end, over and over for SECONDS (at least
3 times) after one call not measured. Prints one JSON line a call: ``{"ttft_us", "total_us", "pieces",
"text_crc"}``, the time to the first piece with text and to the end from the call, the pieces with text, and the
CRC-32 of the text (the server's stream must give the same).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterable
from typing import Any

from timed_streams import PROMPT, repeated


def predictor_of(factory: str, model: str) -> Any:
    module_name, _, attribute = factory.partition(":")
    made = getattr(importlib.import_module(module_name), attribute)
    found = made() if callable(made) else made
    candidates = found if isinstance(found, list | tuple) else [found]
    for predictor in candidates:
        if predictor.name == model:
            predictor.load()
            return predictor
    raise SystemExit(f"{factory} has no model named {model!r}")


def generator(predictor: Any, kind: str, params: dict[str, Any]) -> Iterable[Any]:
    if kind == "chat":
        return predictor.chat([{"role": "user", "content": PROMPT}], dict(params))  # type: ignore[no-any-return]
    return predictor.complete(PROMPT, dict(params))  # type: ignore[no-any-return]


def texts(predictor: Any, kind: str, params: dict[str, Any]) -> Iterable[str]:
    result = generator(predictor, kind, params)
    for piece in [result] if isinstance(result, str) or hasattr(result, "text") else result:
        yield piece if isinstance(piece, str) else piece.text


def main(factory: str, model: str, kind: str, params_json: str, seconds: str) -> None:
    predictor = predictor_of(factory, model)
    params = json.loads(params_json)
    repeated(lambda: texts(predictor, kind, params), float(seconds))


if __name__ == "__main__":
    main(*sys.argv[1:6])
