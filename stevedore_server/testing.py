"""Helpers for plugin authors' tests: run the server's own load and self-test on a predictor."""

from __future__ import annotations

from .plugins import PluginSource
from .predictor import Predictor
from .registry import ModelEntry


class SelfTestFailed(AssertionError):
    """The predictor would not be served: its reason is the message."""


def self_test(predictor: Predictor) -> ModelEntry:
    """Validate fixtures, ``load()`` and self-test exactly as the server does; raise if it would not serve."""
    entry = ModelEntry(predictor, PluginSource(entry_point=f"test of {type(predictor).__qualname__}"))
    entry.load()
    if not entry.ready:
        raise SelfTestFailed(f"{predictor!r} would not be served: {entry.reason}")
    return entry
