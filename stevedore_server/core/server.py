"""The server a process runs: the object hooks receive and front ends reach through the app's state."""

from __future__ import annotations

from dataclasses import dataclass, field

from stevedore_server.base.metrics import Metrics
from stevedore_server.base.settings import Settings
from stevedore_server.base.sources import PluginSource
from stevedore_server.plugins.routes import PluginRoute
from stevedore_server.predictor import Predictor

from .inference import Inference
from .payload_log import PayloadLog
from .pipelines import Pipelines
from .served_models import Registry
from .traffic import TrafficRouter


@dataclass
class ModelServer:
    """Its settings, its models (``registry``), the inference core every front end calls, its metrics, and the
    plugins' own routes."""

    settings: Settings
    registry: Registry
    metrics: Metrics = field(default_factory=Metrics)
    #: The plugins' own routes (``stevedore_routes``), served by the app after its built-in routes.
    plugin_routes: list[PluginRoute] = field(default_factory=list)
    inference: Inference = field(init=False)
    #: Each inference's request and response for ``stevedore_inference_logged``: records nothing until
    #: ``startup.build_server`` gives it the hooks.
    payload_log: PayloadLog = field(init=False)
    #: The pipelines of models (``pipelines``): none until ``startup.build_server`` makes them.
    pipelines: Pipelines = field(init=False)
    #: The traffic names (``[traffic.NAME]``), which ``inference`` routes to their variants.
    traffic: TrafficRouter = field(init=False)

    def __post_init__(self) -> None:
        self.inference = Inference(self.registry, self.settings.max_json_depth)
        self.payload_log = PayloadLog(self.settings, None, self, self.metrics)
        self.pipelines = Pipelines({}, self.inference, self.metrics)
        self.traffic = TrafficRouter(self.inference, self.registry, self.metrics, self.settings.max_json_depth)
        self.traffic.configure(self.settings.traffic, self.settings.strict)

    def source_of(self, predictor: Predictor) -> PluginSource | None:
        """The plugin that provided ``predictor`` (an entry point, or a hook plugin)."""
        return self.registry.source_of(predictor)
