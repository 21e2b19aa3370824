"""The commands about this machine's installed models and settings: ``run`` (serve them), ``list``,
``check``, ``schema`` and ``config``."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import click
import orjson

from stevedore_server.base.errors import NotFound, StevedoreError, UnknownModel
from stevedore_server.base.logs import logging_config
from stevedore_server.base.settings import Settings
from stevedore_server.core import startup
from stevedore_server.core.served_models import version_key
from stevedore_server.kit.checking import Report, shadowing

from .options import (
    FILE_SETTINGS,
    PLUGIN_SETTINGS,
    RUN_SECTIONS,
    RUN_SETTINGS,
    SECTIONS,
    SectionedCommand,
    kserve_options,
    load_or_exit,
    make_run_settings,
    make_settings,
    settings_options,
)

#: ``run --help``'s examples.
RUN_EXAMPLES = """
Examples:
  Every installed plugin's models, HTTP on port 8000 and gRPC on 8081:
    stevedore-server run
  One model file, served with no code:
    stevedore-server run --model wine=./wine.onnx
  A folder of MLServer's model-settings.json files:
    stevedore-server run --mlserver ./models
  A settings file (per-model settings in [models.NAME] tables):
    stevedore-server run --config stevedore.toml
  Four server processes, on every address:
    stevedore-server run --workers 4 --host 0.0.0.0
"""


@click.command(
    cls=SectionedCommand,
    sections=RUN_SECTIONS,
    short_help="Serve the selected models over HTTP and gRPC.",
    epilog=RUN_EXAMPLES,
)
@settings_options(RUN_SETTINGS)
@kserve_options
def run(**values: Any) -> None:
    """Serve the selected models (every installed one by default): HTTP on --port, the Open Inference Protocol
    over gRPC on --grpc-port.

    Each option is also a STEVEDORE_* variable and a key of the --config file (a flag beats its variable, which
    beats the file); the port also comes from PORT, as platforms set it."""
    from stevedore_server.process.entry import serve

    settings = make_run_settings(**values)
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    try:
        serve(settings)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None


@click.command(name="list", short_help="List the models and plugins, with their state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options(PLUGIN_SETTINGS + FILE_SETTINGS)
def list_models(as_json: bool, **values: Any) -> None:
    """List plugins and predictors with their state (loads and self-tests them)."""
    settings = make_settings(**values)
    registry = load_or_exit(settings).registry
    if as_json:
        report = {
            "models": [
                {
                    "name": e.name,
                    "version": e.version,
                    "state": e.state,
                    "reason": e.reason,
                    "entry_point": e.source.entry_point,
                    "distribution": e.source.distribution,
                    "distribution_version": e.source.distribution_version,
                }
                for e in registry.models
            ],
            "failed_plugins": [failure.as_dict() for failure in registry.plugin_failures],
        }
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    if not registry.models and not registry.plugin_failures:
        click.echo(no_models(selected_runtime_names(settings)))
        return
    rows = [("MODEL", "VERSION", "STATE", "PLUGIN", "REASON")]
    for e in registry.models:
        plugin = f"{e.source.distribution or '-'} ({e.source.entry_point})"
        rows.append((e.name, e.version, str(e.state), plugin, e.reason or ""))
    for failure in registry.plugin_failures:
        source = failure.source
        rows.append(("-", "-", "failed", f"{source.distribution or '-'} ({source.entry_point})", failure.error))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])


@click.command(short_help="Load, validate and self-test every selected model.")
@settings_options(PLUGIN_SETTINGS + FILE_SETTINGS)
def check(**values: Any) -> None:
    """Load every selected plugin, validate its fixtures and self-test it; exit 1 on any failure."""
    settings = make_settings(**values)
    server = load_or_exit(settings)
    registry = server.registry
    shadowed = shadowing(server.plugin_routes, settings)
    for line in Report.of(registry).lines + tuple(shadowed):
        click.echo(line)
    if not registry.models and not registry.plugin_failures:
        runtimes = selected_runtime_names(settings)
        if not runtimes:
            raise click.ClickException("no models found: no installed distribution provides stevedore.predictors")
        click.echo(no_models(runtimes))
        return
    if registry.failures or shadowed:
        failures = len(registry.failures) + len(shadowed)
        raise click.ClickException(f"{failures} failure(s); see above and the log for tracebacks")
    click.echo(f"all {len(registry.models)} models passed")


def selected_runtime_names(settings: Settings) -> list[str]:
    """The names of the installed runtimes the selection selects: what serves model files."""
    from stevedore_server.plugins.model_files import installed_runtimes

    return sorted(installed_runtimes(settings.selection))


def no_models(runtimes: list[str]) -> str:
    """What ``list`` and ``check`` say of no model, with the runtimes installed, which serve model files."""
    if not runtimes:
        return "no models"
    # An image of runtimes only (KServe's model-file runtime): its models are files declared where it runs.
    return f"no models; runtimes installed: {', '.join(runtimes)} (they serve model files)"


@click.command(short_help="Print a model's predict (or score) JSON Schema.")
@click.argument("name")
@click.option("--version", "model_version", help="Model version (default: the highest installed).")
@click.option("--score", is_flag=True, help="Print the score schema instead of the predict schema.")
@settings_options(PLUGIN_SETTINGS + FILE_SETTINGS)
def schema(name: str, model_version: str | None, score: bool, **values: Any) -> None:
    """Print a model's predict (or score) JSON Schema."""
    settings = make_settings(**values)
    try:
        candidates, _, _ = startup.find(settings)
        mine = [c.predictor for c in candidates if c.predictor.name == name]
        if not mine:
            raise UnknownModel.named(name, (c.predictor.name for c in candidates))
        predictor = pick_version(mine, name, model_version)
        document = predictor.resolved_schema("score" if score else "predict")
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
    if document is None:
        raise click.ClickException(f"model {name!r} has no score service")
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def pick_version(predictors: list[Any], name: str, version: str | None) -> Any:
    """The predictor of ``version``, or of the highest version (PEP 440 order where the versions parse)."""
    if not predictors:
        raise NotFound(f"no model named {name!r}")
    if version is None:
        key = version_key(p.version for p in predictors)
        return max(predictors, key=lambda predictor: key(predictor.version))
    for predictor in predictors:
        if predictor.version == version:
            return predictor
    raise NotFound(f"model {name!r} has no version {version!r}")


@click.command(cls=SectionedCommand, sections=SECTIONS, short_help="Print the effective settings, secrets masked.")
@settings_options(RUN_SETTINGS)
def config(**values: Any) -> None:
    """Print the effective settings (options, then environment, then file), secrets masked."""
    click.echo(orjson.dumps(make_settings(**values).masked(), option=orjson.OPT_INDENT_2).decode())
