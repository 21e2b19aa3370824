"""Helpers for plugin authors' tests: run the server's own load and self-test on a predictor."""

from __future__ import annotations

from stevedore_server.base.errors import SelfTestFailed
from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.loading import LoadedModel, load_model

from .predictor import Predictor

__all__ = ["SelfTestFailed", "self_test"]


def self_test(predictor: Predictor) -> LoadedModel:
    """Validate fixtures, ``load()`` and self-test exactly as the server does; raise if it would not serve."""
    loaded = load_model(predictor, PluginSource(entry_point=f"test of {type(predictor).__qualname__}"))
    if not loaded.ready:
        raise SelfTestFailed(f"{predictor!r} would not be served: {loaded.reason}")
    return loaded
