"""The commands that ship the models elsewhere: ``build`` (a container image), ``environment-settings``
(models in environments of their own), ``manifests`` (Kubernetes and KServe) and ``ray`` (Ray Serve)."""

from __future__ import annotations

import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from stevedore_server.base.errors import StevedoreError
from stevedore_server.base.settings import Settings
from stevedore_server.base.settings.pipelines import Pipeline, with_shipped
from stevedore_server.core import startup
from stevedore_server.deploy.manifests import FILE_MODEL_FORMATS, SAMPLE_STORAGE_URI

from .options import (
    PLUGIN_SETTINGS,
    RAY_SETTINGS,
    SECTIONS,
    SectionedCommand,
    find_or_exit,
    make_settings,
    settings_options,
)


def checked_plugins(context: click.Context, parameter: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each ``--plugin`` a wheel, a directory or a requirement, before pip sees any: never one of its options."""
    from stevedore_server.deploy.image import check_plugin

    try:
        return tuple(check_plugin(value) for value in values)
    except StevedoreError as error:
        raise click.BadParameter(str(error), context, parameter) from None


def checked_base_image(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """An image reference, before it goes into the Containerfile."""
    from stevedore_server.deploy.image import check_base_image

    try:
        return None if value is None else check_base_image(value)
    except StevedoreError as error:
        raise click.BadParameter(str(error), context, parameter) from None


@click.command(short_help="Build a container image of the server and plugins.")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="WHEEL_OR_REQUIREMENT",
    callback=checked_plugins,
    help="A plugin to preinstall: a wheel file, a source directory or a requirement (repeatable).",
)
@click.option(
    "--isolated-plugin",
    "isolated_plugins",
    multiple=True,
    metavar="WHEEL_OR_REQUIREMENT",
    callback=checked_plugins,
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
    callback=checked_base_image,
    help="Base image with Python, an image reference (default: the official python slim image of this Python's "
    "version).",
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


@click.command(name="environment-settings", short_help="Print settings that run models in their own environments.")
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


@click.command(short_help="Write Kubernetes and KServe manifests for an image.")
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
@click.option(
    "--api-key-secret",
    metavar="NAME",
    help="The Secret whose `api-keys` item is the API key file (SHA-256 hex digests of the keys, one a line): "
    "mounted read-only, and STEVEDORE_API_KEY_FILE set to it; without it the server asks no key. The probes "
    "call /readyz and /livez without a key, which the server answers while --auth-health is off (its default). "
    "Make it with `kubectl create secret generic NAME --from-file=api-keys=FILE`.",
)
@click.option(
    "--state-claim",
    metavar="CLAIM",
    help="A PersistentVolumeClaim mounted as the state directory (/var/lib/stevedore: the jobs database and the "
    "trained versions' artifacts), kept when a pod is replaced. Default: an emptyDir, lost with the pod. Every "
    "replica mounts it: with more than one, a ReadWriteMany claim, or the jobs in PostgreSQL "
    "(STEVEDORE_DATABASE_URL).",
)
@click.option(
    "--ingress-namespace",
    "ingress_namespaces",
    multiple=True,
    default=["ingress-nginx"],
    show_default=True,
    help="A namespace whose pods the NetworkPolicy lets reach the HTTP and gRPC ports: the ingress "
    "controller's (repeatable; matched by its kubernetes.io/metadata.name label).",
)
@click.option(
    "--metrics-namespace",
    "metrics_namespaces",
    multiple=True,
    default=["monitoring"],
    show_default=True,
    help="A namespace whose pods the NetworkPolicy lets reach the HTTP port, for /metrics: the Prometheus "
    "scraper's (repeatable).",
)
@click.option(
    "--storage-uri",
    default=SAMPLE_STORAGE_URI,
    show_default=True,
    help="The model-file InferenceService's storageUri, which KServe's storage initializer downloads into "
    "/mnt/models (s3://, gs://, https://, pvc://, ...).",
)
@click.option(
    "--model-format",
    type=click.Choice(FILE_MODEL_FORMATS),
    default=FILE_MODEL_FORMATS[0],
    show_default=True,
    help="The model-file InferenceService's model format.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="The model-file runtime reads model files that run code when loaded (pickle, joblib) for every "
    "InferenceService (STEVEDORE_ALLOW_PICKLE=true): for model stores only the cluster's operators can write. "
    "Without it one InferenceService opts in with that variable in its predictor.model.env.",
)
@settings_options(PLUGIN_SETTINGS)
def manifests(
    image: str,
    output: Path,
    model_names: tuple[str, ...],
    name: str,
    namespace: str | None,
    http_port: int,
    grpc: int,
    api_key_secret: str | None,
    state_claim: str | None,
    ingress_namespaces: tuple[str, ...],
    metrics_namespaces: tuple[str, ...],
    storage_uri: str,
    model_format: str,
    allow_pickle: bool,
    **values: Any,
) -> None:
    """Write Kubernetes manifests for an image: a KServe ClusterServingRuntime and a sample InferenceService, the
    same for model files (a storageUri's, read by the image's runtime wheels), a KServe InferenceGraph for each
    pipeline of the settings (with an InferenceService for each model it calls; what KServe cannot express is
    printed as a warning), and a Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget and
    NetworkPolicy for clusters without KServe."""
    from stevedore_server.deploy.inference_graph import inference_graphs, resources
    from stevedore_server.deploy.manifests import Deployment, render, write

    settings = make_settings(**values)
    models = list(model_names)
    if not models:
        try:
            candidates, _, _ = startup.find(settings)
        except StevedoreError as error:
            raise click.ClickException(str(error)) from None
        models = sorted({candidate.predictor.name for candidate in candidates})
    deployment = Deployment(
        image, models, name=name, namespace=namespace, http_port=http_port, grpc_port=grpc,
        api_key_secret=api_key_secret, state_claim=state_claim,
        ingress_namespaces=ingress_namespaces, metrics_namespaces=metrics_namespaces,
        allow_pickle=allow_pickle, model_format=model_format, storage_uri=storage_uri,
    )  # fmt: skip
    graphs = inference_graphs(deployment, pipeline_definitions(settings))
    notes = {graph.file_name: graph.notes for graph in graphs}
    for path in write(render(deployment) | resources(graphs), output, notes):
        click.echo(f"wrote {path}")
    for note in (note for graph in graphs for note in graph.notes):
        click.echo(f"warning: not in KServe's InferenceGraph: {note}", err=True)


def pipeline_definitions(settings: Settings) -> dict[str, Pipeline]:
    """The pipelines of the settings file and of the selected plugins (the file's of a name wins), as the server
    builds them (``core.pipelines.build``)."""
    from stevedore_server.plugins.discovery import plugin_pipelines

    shipped, failures = plugin_pipelines(settings.selection)
    for failure in failures:
        click.echo(f"warning: {failure.source.describe()}: {failure.error}", err=True)
    try:
        return with_shipped(settings.pipelines, {name: table for name, (table, _) in shipped.items()})
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None


@click.command(
    name="ray",
    cls=SectionedCommand,
    sections={"Ray Serve": ("address", "config_only", "output")} | SECTIONS,
    short_help="Serve the installed plugins on a Ray cluster.",
)
@click.option(
    "--address",
    envvar="RAY_ADDRESS",
    help="The Ray cluster to deploy on (HOST:PORT of its head, or auto). [env: RAY_ADDRESS]",
)
@click.option("--config-only", is_flag=True, help="Write the Serve config file instead of deploying.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="With --config-only: the file (default: stdout)."
)
@settings_options(RAY_SETTINGS)
def ray_serve(address: str | None, config_only: bool, output: Path | None, **values: Any) -> None:
    """Serve the installed plugins on a Ray cluster with Ray Serve: a deployment for each model (replicas and
    autoscaling from its [models.NAME] table) and the HTTP API of `run` at --host and --port.

    Run it on a node of the cluster (the head): the secrets (API keys, the database's URL) go into a file there
    that only this user can read, and the ingress runs on that node to read it."""
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
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
