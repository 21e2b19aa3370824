"""Options and helpers every command family shares: the settings as click options (secrets only where the
setting says so: a command line is visible to every user), settings read once from the options, the environment and
the file, and the installed models found or loaded with errors as messages."""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import os
import re
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
#: What declares model files, for the commands that look at the models: ``list``, ``check``, ``schema``.
FILE_SETTINGS = ("model", "mlserver", "allow_pickle", "state_dir")
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
    if kind is tuple and item.metadata["repeated"]:
        return click.option(flag, item.name, multiple=True, default=None, help=help_text + " May be repeated.")
    if kind is tuple:
        return click.option(flag, item.name, default=None, help=help_text + " Comma-separated.")
    return click.option(flag, item.name, type=kind, default=None, help=help_text)


def make_settings(**values: Any) -> Settings:
    """Settings from the options given, the environment and the file; an error names the setting."""
    for name, value in values.items():
        if value == ():  # a repeated flag not given
            values[name] = None
        elif isinstance(value, str) and base_type(HINTS[name]) is tuple:
            values[name] = tuple(part.strip() for part in value.split(",") if part.strip())
    try:
        return Settings.load(os.environ, **values)
    except StevedoreError as error:
        raise click.UsageError(str(error)) from None


#: KServe's runtime arguments, as its model servers take them (``--model_name={{.Name}} --model_dir=/mnt/models
#: --http_port=8080`` in a ServingRuntime): each option's parameter name, flag and help.
KSERVE_OPTIONS = (
    ("kserve_model_name", "--model_name", "NAME", "KServe's: the name the model of --model_dir is served as."),
    (
        "kserve_model_dir",
        "--model_dir",
        "DIR",
        "KServe's: the model's folder (or file, or URI), its runtime guessed from its contents; with --model_name "
        "the same as --model NAME=DIR.",
    ),
    ("kserve_http_port", "--http_port", "PORT", "KServe's name of --port."),
    ("kserve_grpc_port", "--grpc_port", "PORT", "KServe's name of --grpc-port."),
)
#: KServe's port options: the setting each sets, and that setting's own flag.
KSERVE_PORTS = {"kserve_http_port": ("port", "--port"), "kserve_grpc_port": ("grpc_port", "--grpc-port")}
#: A model's name as ``--model NAME=URI`` takes it.
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")


def kserve_options(command: Any) -> Any:
    """KServe's runtime arguments as options of ``run`` (and of no other command)."""
    for parameter, flag, metavar, help_text in reversed(KSERVE_OPTIONS):
        kind = int if parameter in KSERVE_PORTS else str
        command = click.option(flag, parameter, type=kind, metavar=metavar, default=None, help=help_text)(command)
    return command


def make_run_settings(**values: Any) -> Settings:
    """``make_settings`` with KServe's arguments in their place: its ports as ours, its model as one more
    ``--model NAME=DIR`` (added to those of the flag, the variable or the file, which it does not replace)."""
    entry = kserve_model(values.pop("kserve_model_name"), values.pop("kserve_model_dir"))
    for parameter, (name, flag) in KSERVE_PORTS.items():
        port = values.pop(parameter)
        if port is None:
            continue
        if values[name] not in (None, port):
            kserve_flag = next(option[1] for option in KSERVE_OPTIONS if option[0] == parameter)
            raise click.UsageError(f"{kserve_flag} {port} and {flag} {values[name]} disagree: give one of them")
        values[name] = port
    settings = make_settings(**values)
    if entry is None:
        return settings
    try:
        return dataclasses.replace(settings, model=(*settings.model, entry))
    except StevedoreError as error:
        raise click.UsageError(str(error)) from None


def kserve_model(name: str | None, folder: str | None) -> str | None:
    """``NAME=DIR`` of ``--model_name NAME --model_dir DIR``, which go together; None without either."""
    if name is None and folder is None:
        return None
    if folder is None:
        raise click.UsageError("--model_name needs --model_dir DIR, the model's folder (KServe passes both)")
    if name is None:
        raise click.UsageError("--model_dir needs --model_name NAME, the model's name (KServe passes both)")
    if not MODEL_NAME.fullmatch(name):
        raise click.UsageError(f"--model_name {name!r}: a model's name is letters, digits, '.', '_' and '-'")
    if not folder.strip():
        raise click.UsageError("--model_dir: empty; the model's folder, file or URI")
    return f"{name}={folder}"


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
