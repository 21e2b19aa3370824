"""Logging configuration shared by the server (uvicorn's dictConfig) and the CLI."""

from __future__ import annotations

import copy
from typing import Any

from uvicorn.config import LOGGING_CONFIG


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration with the ``stevedore`` loggers added at ``level``."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["stevedore"] = {
        "()": "logging.Formatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
    }
    config["handlers"]["stevedore"] = {
        "formatter": "stevedore",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    python_level = "DEBUG" if level == "trace" else level.upper()
    config["loggers"]["stevedore"] = {"handlers": ["stevedore"], "level": python_level, "propagate": False}
    return config
