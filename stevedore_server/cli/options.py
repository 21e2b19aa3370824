"""Options and helpers every command family shares: the settings as click options (secrets only where the
setting says so: a command line is visible to every user), settings read once from the options, the environment and
the file, and the installed models found or loaded with errors as messages."""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import os
import sys
from collections.abc import Callable
from dataclasses import Field, fields
from typing import Any

import click

from stevedore_server.base.errors import StevedoreError
from stevedore_server.base.settings import HINTS, Settings, base_type, env_name
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer

#: Settings each command takes as options (secrets only where the setting says: a command line is visible to
#: every user).
PLUGIN_SETTINGS = ("plugins", "disable_plugins", "config")
RUN_SETTINGS = tuple(item.name for item in fields(Settings) if not item.metadata["file_only"] and item.metadata["flag"])
#: On Ray Serve: the processes and the gRPC port are Ray's business.
RAY_SETTINGS = tuple(name for name in RUN_SETTINGS if name not in ("workers", "grpc_port"))


def settings_options(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """Click options for the named settings; an unset option leaves the variable, file or default in force."""

    def decorate(command: Any) -> Any:
        for item in reversed([item for item in fields(Settings) if item.name in names]):
            command = settings_option(item)(command)
        return command

    return decorate


def settings_option(item: Field[Any]) -> Callable[[Any], Any]:
    kind = base_type(HINTS[item.name])
    flag = "--" + item.name.replace("_", "-")
    default = "none" if item.default in (None, ()) else item.default
    help_text = f"{item.metadata['help']} [env {env_name(item.name)}; default: {default}]"
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", item.name, default=None, help=help_text)
    if kind is tuple:
        return click.option(flag, item.name, default=None, help=help_text + " Comma-separated.")
    return click.option(flag, item.name, type=kind, default=None, help=help_text)


def make_settings(**values: Any) -> Settings:
    """Settings from the options given, the environment and the file; an error names the setting."""
    for name, value in values.items():
        if isinstance(value, str) and base_type(HINTS[name]) is tuple:
            values[name] = tuple(part.strip() for part in value.split(",") if part.strip())
    try:
        return Settings.load(os.environ, **values)
    except StevedoreError as error:
        raise click.UsageError(str(error)) from None


def load_or_exit(settings: Settings) -> ModelServer:
    """Every selected model loaded and self-tested, as a server would (without serving); errors as messages.

    Every model, whatever ``load_models`` says: these commands check what is installed.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    settings = dataclasses.replace(settings, load_models=("all",))
    try:
        return startup.build_server(settings, startup.load(settings))
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None


def find_or_exit(settings: Settings) -> list[Any]:
    """The installed predictors, not loaded (plugins that fail are logged and left out)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return startup.find(settings)[0]
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
