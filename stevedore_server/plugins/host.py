"""What a hook is handed as ``server``: the running server, as the plugin contract describes it.

The core's ``ModelServer`` is one. The hooks and the built-in plugins see it
through these protocols, so the plugin layer names no class of the layers
above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stevedore_server.base.settings import Settings
    from stevedore_server.base.sources import PluginFailure, PluginSource
    from stevedore_server.predictor import Predictor

    from .loading import State


class ServedModel(Protocol):
    """One model as the server holds it: its predictor, where it came from, and whether it is ready."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def predictor(self) -> Predictor: ...
    @property
    def source(self) -> PluginSource: ...
    @property
    def state(self) -> State: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def failed(self) -> bool: ...
    @property
    def ready(self) -> bool: ...


class Models(Protocol):
    """The server's models (read when a hook's callable runs: they are replaced while serving)."""

    @property
    def models(self) -> Sequence[ServedModel]: ...
    @property
    def plugin_failures(self) -> list[PluginFailure]: ...


class Server(Protocol):
    """The server a hook extends: its settings, its models, and which plugin provided a predictor."""

    @property
    def settings(self) -> Settings: ...
    @property
    def registry(self) -> Models: ...
    def source_of(self, predictor: Predictor) -> PluginSource | None: ...
