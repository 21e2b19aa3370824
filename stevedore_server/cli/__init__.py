"""The ``stevedore-server`` command."""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import os
import sys
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import click
import orjson
import yaml

from stevedore_server.base.errors import NotFound, StevedoreError
from stevedore_server.base.logs import logging_config
from stevedore_server.base.settings import HINTS, Settings, base_type, env_name
from stevedore_server.base.version import __version__
from stevedore_server.core import startup
from stevedore_server.core.registry import version_key
from stevedore_server.core.server import ModelServer
from stevedore_server.kit.checking import Report

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stevedore-server")
def main() -> None:
    """Serve every installed stevedore model plugin over HTTP."""


@main.command()
@settings_options(RUN_SETTINGS)
def run(**values: Any) -> None:
    """Serve every selected model."""
    from stevedore_server.process.entry import serve

    settings = make_settings(**values)
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    try:
        serve(settings)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options(PLUGIN_SETTINGS)
def list_models(as_json: bool, **values: Any) -> None:
    """List plugins and predictors with their state (loads and self-tests them)."""
    registry = load_or_exit(make_settings(**values)).registry
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


@main.command()
@settings_options(PLUGIN_SETTINGS)
def check(**values: Any) -> None:
    """Load every selected plugin, validate its fixtures and self-test it; exit 1 on any failure."""
    registry = load_or_exit(make_settings(**values)).registry
    for line in Report.of(registry).lines:
        click.echo(line)
    if not registry.models and not registry.plugin_failures:
        raise click.ClickException("no models found: no installed distribution provides stevedore.predictors")
    if registry.failures:
        raise click.ClickException(f"{len(registry.failures)} failure(s); see above and the log for tracebacks")
    click.echo(f"all {len(registry.models)} models passed")


@main.command()
@click.argument("name")
@click.option("--version", "model_version", help="Model version (default: the highest installed).")
@click.option("--score", is_flag=True, help="Print the score schema instead of the predict schema.")
@settings_options(PLUGIN_SETTINGS)
def schema(name: str, model_version: str | None, score: bool, **values: Any) -> None:
    """Print a model's predict (or score) JSON Schema."""
    settings = make_settings(**values)
    try:
        candidates, _, _ = startup.find(settings)
        predictor = pick_version([c.predictor for c in candidates if c.predictor.name == name], name, model_version)
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


@main.group()
def models() -> None:
    """A running server's model repository: list, load and unload models while it serves.

    The API key, when the server needs one, is read from STEVEDORE_API_KEY.
    """


URL_OPTION = click.option(
    "--url", default="http://127.0.0.1:8000", show_default=True, help="The running server's base URL."
)


@models.command(name="index")
@URL_OPTION
@click.option("--ready", is_flag=True, help="Only the models that are ready.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_index(url: str, ready: bool, as_json: bool) -> None:
    """Every model the server's installed plugins provide, with its state."""
    from . import client as remote

    entries = remote_or_exit(remote.index, url, ready)
    if as_json:
        click.echo(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode())
        return
    for entry in entries:
        click.echo(f"{entry['name']}  {entry['version']}  {entry['state']}  {entry.get('reason') or ''}".rstrip())


@models.command(name="load")
@click.argument("name")
@URL_OPTION
def models_load(name: str, url: str) -> None:
    """Load (or reload) model NAME: installed plugins are read again, so a wheel installed since is found."""
    from . import client as remote

    remote_or_exit(remote.load, url, name)
    click.echo(f"{name} loaded")


@models.command(name="unload")
@click.argument("name")
@URL_OPTION
def models_unload(name: str, url: str) -> None:
    """Unload model NAME: not ready at once; its calls in flight finish."""
    from . import client as remote

    remote_or_exit(remote.unload, url, name)
    click.echo(f"{name} unloaded")


@main.group()
def jobs() -> None:
    """A running server's jobs (trainings): list them, show one, print its logs, cancel it.

    The API key, when the server needs one, is read from STEVEDORE_API_KEY.
    """


@jobs.command(name="list")
@URL_OPTION
@click.option("--model", help="Only this model's jobs.")
@click.option("--state", help="Only jobs in this state (queued, running, succeeded, failed, cancelled, interrupted).")
@click.option("--limit", default=50, show_default=True, help="Most jobs listed, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def jobs_list(url: str, model: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """The server's jobs, newest first."""
    from . import client as remote

    found = remote_or_exit(remote.list_jobs, url, model, state, limit)
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    for job in found:
        click.echo(f"{job['id']}  {job['model']}  {job['state']}  {job['progress']:.0%}  {job['created']}")


@jobs.command(name="show")
@click.argument("job_id")
@URL_OPTION
def jobs_show(job_id: str, url: str) -> None:
    """Job JOB_ID as JSON: state, progress, parameters, result or error, times."""
    from . import client as remote

    click.echo(orjson.dumps(remote_or_exit(remote.show_job, url, job_id), option=orjson.OPT_INDENT_2).decode())


@jobs.command(name="logs")
@click.argument("job_id")
@URL_OPTION
def jobs_logs(job_id: str, url: str) -> None:
    """Every log line of job JOB_ID."""
    from . import client as remote

    for line in remote_or_exit(remote.job_logs, url, job_id):
        click.echo(f"{line['time']} {line['level']:<7} {line['line']}")


@jobs.command(name="cancel")
@click.argument("job_id")
@URL_OPTION
def jobs_cancel(job_id: str, url: str) -> None:
    """Cancel job JOB_ID: a queued one at once, a running one is stopped (SIGTERM, then SIGKILL)."""
    from . import client as remote

    job = remote_or_exit(remote.cancel_job, url, job_id)
    click.echo(f"{job['id']} {'cancelled' if job['state'] == 'cancelled' else 'cancelling'}")


def remote_or_exit(command: Callable[..., Any], *args: Any) -> Any:
    try:
        return command(*args)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@settings_options(RUN_SETTINGS)
def config(**values: Any) -> None:
    """Print the effective settings (options, then environment, then file), secrets masked."""
    click.echo(orjson.dumps(make_settings(**values).masked(), option=orjson.OPT_INDENT_2).decode())


@main.command(name="new-plugin")
@click.argument("name")
@click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create the package (default: ./stevedore-NAME).",
)
def new_plugin(name: str, directory: Path | None) -> None:
    """Create a ready-to-build plugin package for a model called NAME."""
    from stevedore_server.kit.scaffold import create_plugin

    try:
        created = create_plugin(name, directory)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"created {created}")
    click.echo(f"next: pip install {created} && stevedore-server check")


@main.command()
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="WHEEL_OR_REQUIREMENT",
    help="A plugin to preinstall: a wheel file, a source directory or a requirement (repeatable).",
)
@click.option(
    "--isolated-plugin",
    "isolated_plugins",
    multiple=True,
    metavar="WHEEL_OR_REQUIREMENT",
    help="A plugin to preinstall in a virtual environment of its own, with its own dependencies; its models run "
    "there (repeatable).",
)
@click.option("--tag", default="stevedore-server:latest", show_default=True, help="Tag of the image.")
@click.option(
    "--engine", type=click.Choice(["podman", "docker"]), help="Container engine (default: podman, else docker)."
)
@click.option(
    "--base-image",
    default=None,
    help="Base image with Python (default: the official python slim image of this Python's version).",
)
@click.option(
    "--output-context",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the build context (Containerfile and wheelhouse) to this new directory and stop: for CI systems "
    "that build elsewhere.",
)
def build(
    plugins: tuple[str, ...],
    isolated_plugins: tuple[str, ...],
    tag: str,
    engine: str | None,
    base_image: str | None,
    output_context: Path | None,
) -> None:
    """Build a container image with the core and the given plugins preinstalled."""
    import tempfile

    from stevedore_server.deploy.image import DEFAULT_BASE_IMAGE, build_image, find_engine, write_context

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        chosen_engine = None if output_context else find_engine(engine)
        with tempfile.TemporaryDirectory(prefix="stevedore-build-") as scratch:
            directory = output_context or Path(scratch) / "context"
            context = write_context(directory, list(plugins), base_image or DEFAULT_BASE_IMAGE, list(isolated_plugins))
            if chosen_engine is None:
                click.echo(f"wrote the build context to {directory}; build it with:")
                click.echo(f"  docker build --tag {tag} {directory}   (podman: add --format docker)")
                return
            build_image(context, chosen_engine, tag)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"built {tag}: stevedore-server {context.server_version}, plugins: {context.plugin_label or 'none'}")


@main.command(name="environment-settings")
@click.argument("environments", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
def environment_settings_command(environments: tuple[Path, ...], output: Path | None) -> None:
    """Settings that run every model of each virtual environment ENVIRONMENTS in it: one `[models.NAME]` table
    with `python` a model (`stevedore-server build --isolated-plugin` writes the image's so)."""
    from stevedore_server.processes.environments import environment_settings

    try:
        text = environment_settings(list(environments), make_settings())
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
    header = "# Models in environments of their own (stevedore-server environment-settings).\n"
    if output is None:
        click.echo(header + text, nl=False)
    else:
        output.write_text(header + text)


@main.command()
@click.option("--image", required=True, help="The image to run (built by `stevedore-server build`).")
@click.option(
    "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory to write to."
)
@click.option(
    "--model",
    "model_names",
    multiple=True,
    help="A model the image serves (repeatable; default: every model installed here).",
)
@click.option("--name", default="stevedore-server", show_default=True, help="Name of the runtime and workloads.")
@click.option("--namespace", default=None, help="Namespace of the namespaced resources (default: none set).")
@click.option("--http-port", default=8080, show_default=True, help="The container's HTTP port.")
@click.option("--grpc-port", "grpc", default=8081, show_default=True, help="The container's gRPC port.")
@settings_options(PLUGIN_SETTINGS)
def manifests(
    image: str,
    output: Path,
    model_names: tuple[str, ...],
    name: str,
    namespace: str | None,
    http_port: int,
    grpc: int,
    **values: Any,
) -> None:
    """Write Kubernetes manifests for an image: a KServe ClusterServingRuntime and a sample InferenceService, and
    a Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget for clusters without KServe."""
    from stevedore_server.deploy.manifests import Deployment, render, write

    models = list(model_names)
    if not models:
        try:
            candidates, _, _ = startup.find(make_settings(**values))
        except StevedoreError as error:
            raise click.ClickException(str(error)) from None
        models = sorted({candidate.predictor.name for candidate in candidates})
    deployment = Deployment(image, models, name=name, namespace=namespace, http_port=http_port, grpc_port=grpc)
    for path in write(render(deployment), output):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()


@main.command(name="ray")
@click.option(
    "--address",
    envvar="RAY_ADDRESS",
    help="The Ray cluster to deploy on (HOST:PORT of its head, or auto). [env RAY_ADDRESS]",
)
@click.option("--config-only", is_flag=True, help="Write the Serve config file instead of deploying.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="With --config-only: the file (default: stdout)."
)
@settings_options(RAY_SETTINGS)
def ray_serve(address: str | None, config_only: bool, output: Path | None, **values: Any) -> None:
    """Serve the installed plugins on a Ray cluster with Ray Serve: a deployment for each model (replicas and
    autoscaling from its [models.NAME] table) and the HTTP API of `run` at --host and --port."""
    from stevedore_server.rayserve.config import APP_NAME, serve_config

    settings = make_settings(**values)
    if config_only:
        predictors = [candidate.predictor for candidate in find_or_exit(settings)]
        document = yaml.safe_dump(serve_config(settings, predictors, settings.host, settings.port), sort_keys=False)
        if output is None:
            click.echo(document, nl=False)
        else:
            output.write_text(document)
            click.echo(f"wrote {output}: `serve deploy {output}` deploys it", err=True)
        return
    if not address:
        raise click.UsageError("--address (or RAY_ADDRESS) names the Ray cluster to deploy on")
    try:
        from stevedore_server.rayserve.app import deploy
    except ImportError as error:
        raise click.ClickException(
            f"Ray Serve is not installed ({error}): pip install 'stevedore-server[ray]'"
        ) from None
    try:
        url = deploy(settings, address)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"serving on {url} (Ray Serve application {APP_NAME!r} on {address})")


def find_or_exit(settings: Settings) -> list[Any]:
    """The installed predictors, not loaded (plugins that fail are logged and left out)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return startup.find(settings)[0]
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
