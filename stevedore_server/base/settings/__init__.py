"""Server settings: one object, read once from CLI flags, ``STEVEDORE_*`` environment variables and a TOML file.

- ``model``: the ``Settings`` and ``ModelSettings`` (``[models.NAME]``) with
  their checks, a model's effective ``ModelLimits``, and reading them
  (``Settings.load``, ``read_document`` for the file's shape);
- ``values``: a value from the file checked against its setting's type, or
  from an environment variable parsed into it;
- ``reference``: the README's table of every setting.

Precedence: a CLI flag beats its environment variable, which beats the file
(``--config`` / ``STEVEDORE_CONFIG``), which beats the default. Part of the
base layer: it imports nothing of the server's but ``base.errors`` and
``base.sources``.
"""

from __future__ import annotations

from .model import (
    AUTOSCALING_SETTINGS,
    ENV_PREFIX,
    HINTS,
    LOG_FORMATS,
    LOG_LEVELS,
    MASK,
    MAX_INLINE_BUDGET,
    MAX_PROCESSES,
    MODEL_HINTS,
    MODEL_LOADS,
    PAYLOAD_LOG_MODES,
    PLATFORM_PORT,
    DeclaresLimits,
    ModelLimits,
    ModelSettings,
    Settings,
    env_name,
    environment_port,
    read_document,
    read_file,
)
from .reference import MODEL_FALLBACKS, reference
from .values import base_type, parse, takes_text, typed

__all__ = [
    "AUTOSCALING_SETTINGS",
    "ENV_PREFIX",
    "HINTS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASK",
    "MAX_INLINE_BUDGET",
    "MAX_PROCESSES",
    "MODEL_FALLBACKS",
    "MODEL_HINTS",
    "MODEL_LOADS",
    "PAYLOAD_LOG_MODES",
    "PLATFORM_PORT",
    "DeclaresLimits",
    "ModelLimits",
    "ModelSettings",
    "Settings",
    "base_type",
    "env_name",
    "environment_port",
    "parse",
    "read_document",
    "read_file",
    "reference",
    "takes_text",
    "typed",
]
