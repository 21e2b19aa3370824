"""Options and helpers every command family shares: the settings as click options (secrets only where the
setting says so: a command line is visible to every user) and the sections their help lists them in, settings read
once from the options, the environment and the file, the port a running server listens on, and the installed models
found or loaded with errors as messages."""

from __future__ import annotations

import dataclasses
import inspect
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
from stevedore_server.base.settings import (
    HINTS,
    LOG_FORMATS,
    LOG_LEVELS,
    MODEL_LOADS,
    PAYLOAD_LOG_MODES,
    Settings,
    base_type,
    env_name,
    environment_port,
    takes_text,
)
from stevedore_server.core import startup
from stevedore_server.core.server import ModelServer

#: Settings each command takes as options (secrets only where the setting says: a command line is visible to
#: every user).
PLUGIN_SETTINGS = ("plugins", "disable_plugins", "config")
#: What declares model files, for the commands that look at the models: ``list``, ``check``, ``schema``.
FILE_SETTINGS = ("model", "mlserver", "allow_pickle", "state_dir")
RUN_SETTINGS = tuple(item.name for item in fields(Settings) if not item.metadata["file_only"] and item.metadata["flag"])
#: On Ray Serve: the processes are Ray's business (the gRPC port is its gRPC proxy's).
RAY_SETTINGS = tuple(name for name in RUN_SETTINGS if name != "workers")

#: ``run --help`` (and ``config``'s, ``ray``'s) in sections: every setting of ``run`` in exactly one (a test checks).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Serving": ("host", "port", "grpc_port", "workers", "config", "console", "mcp", "freeze_heap", "shutdown_delay",
                "graceful_timeout"),
    "Models": ("plugins", "disable_plugins", "load_models", "model_load", "model_memory_budget",
               "max_models_per_replica", "model", "mlserver", "allow_pickle", "strict"),
    "Limits": ("max_body_size", "max_json_depth", "max_concurrency", "max_queue", "timeout", "inline_budget",
               "max_connections", "max_concurrent_rpcs", "max_health_watches"),
    "Security": ("api_key_file", "auth_health", "cors_origins", "allowed_hosts", "open_reflection"),
    "Jobs": ("state_dir", "database_url", "max_jobs", "max_queued_jobs", "job_grace_period", "max_job_log_lines",
             "job_retention", "max_log_followers", "promote_trained", "max_trained_versions"),
    "Logging": ("log_level", "log_format", "access_log"),
    "Observability": ("tracing", "payload_log", "payload_log_mode", "payload_log_sample", "payload_log_redact"),
}  # fmt: skip
#: The API keys are no flag (a command line is visible to every user of the machine): where they come from.
API_KEYS_NOTE = (
    f"API keys (clients send `Authorization: Bearer KEY`) are never flags: a command line is visible to every user "
    f"of the machine. Give them as {env_name('api_keys')}=KEY1,KEY2, as `api_keys = [...]` in the --config file, "
    f"or as --api-key-file, a file of their SHA-256 digests (with scopes). Clients of `models` and `jobs` read "
    f"theirs from STEVEDORE_API_KEY."
)
#: What a section's help says above its options.
SECTION_NOTES = {
    "Security": API_KEYS_NOTE,
    "KServe's arguments": (
        "As KServe's ServingRuntimes pass them: --model_name NAME --model_dir DIR (the same as --model NAME=DIR), "
        "--http_port and --grpc_port (--port and --grpc-port)."
    ),
}

#: The settings whose values are a fixed list: their flags are choices, spelled as the variable and the file take
#: them (the settings compare them as written, so the flags do too).
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": LOG_LEVELS,
    "log_format": LOG_FORMATS,
    "payload_log_mode": PAYLOAD_LOG_MODES,
    "model_load": MODEL_LOADS,
}
#: What a value is, where click's TEXT would not say.
METAVARS = {
    "host": "ADDRESS",
    "plugins": "NAMES",
    "disable_plugins": "NAMES",
    "load_models": "NAMES",
    "cors_origins": "ORIGINS",
    "allowed_hosts": "HOSTS",
    "config": "FILE",
    "api_key_file": "FILE",
    "mlserver": "DIR",
    "state_dir": "DIR",
    "model": "NAME=URI",
    "database_url": "URL",
    "payload_log": "SINK",
    "payload_log_redact": "POINTERS",
    "model_memory_budget": "SIZE",
}
#: A setting's help that tells its default itself (one that depends on other settings): "(default: all)",
#: "Default: ...", "default SQLite"; not "its model's default (what ...".
TELLS_DEFAULT = re.compile(r"\b[Dd]efault(:| [A-Z])")


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
    help_text = f"{item.metadata['help']} {option_note(item)}"
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", item.name, default=None, help=help_text)
    metavar = METAVARS.get(item.name)
    if kind is tuple and item.metadata["repeated"]:
        return click.option(flag, item.name, multiple=True, metavar=metavar, default=None, help=help_text)
    if kind is tuple:
        return click.option(flag, item.name, metavar=metavar or "LIST", default=None, help=help_text)
    if item.name in CHOICES:
        return click.option(flag, item.name, type=click.Choice(CHOICES[item.name]), default=None, help=help_text)
    if takes_text(HINTS[item.name]):  # a size with its unit: the settings read it
        kind = str
    return click.option(flag, item.name, type=kind, metavar=metavar, default=None, help=help_text)


def option_note(item: Field[Any]) -> str:
    """``[env: VARIABLE; default: VALUE; ...]``: the default as a user writes it, left out where there is none or
    the setting's own help tells it (a default that depends on other settings)."""
    kind = base_type(HINTS[item.name])
    notes = [f"env: {env_name(item.name)}"]
    default = shown_default(item.default)
    if default is not None and not TELLS_DEFAULT.search(item.metadata["help"]):
        notes.append(f"default: {default}")
    if kind is tuple and not item.metadata["repeated"]:
        notes.append("comma-separated")
    elif kind is tuple and "repeated" not in item.metadata["help"]:
        notes.append("repeatable")
    return "[" + "; ".join(notes) + "]"


def shown_default(value: Any) -> str | None:
    """A default as the flag, the variable and the file take it: ``all``, ``true``, ``60``; None for none."""
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def server_port() -> int:
    """The HTTP port ``run`` takes from the environment (``environment_port``): where the commands that talk to a
    running server look for it."""
    try:
        return environment_port(os.environ)
    except StevedoreError as error:
        raise click.UsageError(str(error)) from None


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


#: ``run``'s sections: the settings', then KServe's arguments.
RUN_SECTIONS = SECTIONS | {"KServe's arguments": tuple(option[0] for option in KSERVE_OPTIONS)}


#: The widest first column of a help's options (click's own limit).
TERM_WIDTH = 30


class SectionedCommand(click.Command):
    """A command whose help lists its options in sections (``sections``: a title, its parameters' names), with
    a section's note (``SECTION_NOTES``) above its options; the options of no section come last."""

    def __init__(self, *args: Any, sections: dict[str, tuple[str, ...]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {param.name: record for param in self.get_params(ctx) if (record := param.get_help_record(ctx))}
        # One first column for every section, as click's one list of options would have.
        width = min(max(len(term) for term, _ in records.values()), TERM_WIDTH)
        records = {name: (term.ljust(width), text) for name, (term, text) in records.items()}
        for title, names in self.sections.items():
            rows = [records.pop(name) for name in names if name in records]
            if rows:
                with formatter.section(title):
                    if title in SECTION_NOTES:
                        formatter.write_text(SECTION_NOTES[title])
                        formatter.write_paragraph()
                    formatter.write_dl(rows, col_max=TERM_WIDTH)
        if records:
            with formatter.section("Other options"):
                formatter.write_dl(list(records.values()), col_max=TERM_WIDTH)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The epilog as written (examples keep their lines), not indented: a section of its own."""
        if self.epilog:
            formatter.write_paragraph()
            for line in inspect.cleandoc(self.epilog).splitlines():
                formatter.write(f"{line}\n")


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

    Every model, whatever ``load_models`` and ``model_load`` say: these commands check what is installed.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    models = {name: dataclasses.replace(own, load=None) for name, own in settings.models.items()}
    settings = dataclasses.replace(settings, load_models=("all",), model_load="startup", models=models)
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
