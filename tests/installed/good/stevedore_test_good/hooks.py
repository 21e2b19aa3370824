"""Hook implementations of the good test plugin, exposed through the ``stevedore.hooks`` entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stevedore_server import Predictor, hookimpl
from stevedore_server.hookspecs import HealthCheck

from .models import Delta


def cache_is_warm() -> tuple[bool, str]:
    return True, "cache warm"


@hookimpl
def stevedore_health_checks() -> Mapping[str, HealthCheck]:
    return {"good-cache": cache_is_warm}


@hookimpl
def stevedore_catalogue_metadata(predictor: Predictor) -> dict[str, Any] | None:
    return {"team": "test"}


@hookimpl
def stevedore_register_predictors(register: Callable[[Predictor], None]) -> None:
    register(Delta())
