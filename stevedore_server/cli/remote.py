"""The commands that talk to a running server over HTTP (through ``client``): ``models index|load|unload``
(its model repository) and ``jobs list|show|logs|cancel``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import orjson

from stevedore_server.base.errors import StevedoreError
from stevedore_server.jobs.records import JobState

from .options import server_port

URL_OPTION = click.option(
    "--url",
    default=lambda: f"http://127.0.0.1:{server_port()}",
    help="The running server's base URL. [default: http://127.0.0.1:PORT, the port `run` takes: STEVEDORE_PORT, "
    "else PORT, else MLSERVER_HTTP_PORT, else 8000]",
)


@click.group(short_help="A running server's models: index, load, unload.")
def models() -> None:
    """A running server's model repository: list, load and unload models while it serves.

    The API key, when the server needs one, is read from STEVEDORE_API_KEY.
    """


@models.command(name="index", short_help="List the models, with their state.")
@URL_OPTION
@click.option("--ready", is_flag=True, help="Only the models that are ready.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_index(url: str, ready: bool, as_json: bool) -> None:
    """Every model the server's installed plugins provide, with its state."""
    import stevedore_server.cli.client as remote

    entries = remote_or_exit(remote.index, url, ready)
    if as_json:
        click.echo(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode())
        return
    if not entries:
        click.echo("no ready models" if ready else "no models")
    for entry in entries:
        click.echo(f"{entry['name']}  {entry['version']}  {entry['state']}  {entry.get('reason') or ''}".rstrip())


@models.command(name="load", short_help="Load (or reload) model NAME.")
@click.argument("name")
@URL_OPTION
def models_load(name: str, url: str) -> None:
    """Load (or reload) model NAME: installed plugins are read again, so a wheel installed since is found."""
    import stevedore_server.cli.client as remote

    remote_or_exit(remote.load, url, name)
    click.echo(f"{name} loaded")


@models.command(name="unload", short_help="Unload model NAME.")
@click.argument("name")
@URL_OPTION
def models_unload(name: str, url: str) -> None:
    """Unload model NAME: not ready at once; its calls in flight finish."""
    import stevedore_server.cli.client as remote

    remote_or_exit(remote.unload, url, name)
    click.echo(f"{name} unloaded")


@click.group(short_help="A running server's jobs: list, show, logs, cancel.")
def jobs() -> None:
    """A running server's jobs (trainings): list them, show one, print its logs, cancel it.

    The API key, when the server needs one, is read from STEVEDORE_API_KEY.
    """


@jobs.command(name="list", short_help="List the jobs, newest first.")
@URL_OPTION
@click.option("--model", help="Only this model's jobs.")
@click.option("--state", type=click.Choice([state.value for state in JobState]), help="Only jobs in this state.")
@click.option("--limit", default=50, show_default=True, help="Most jobs listed, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def jobs_list(url: str, model: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """The server's jobs, newest first."""
    import stevedore_server.cli.client as remote

    found = remote_or_exit(remote.list_jobs, url, model, state, limit)
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no jobs" + (f" of model {model}" if model else "") + (f" in state {state}" if state else ""))
    for job in found:
        click.echo(f"{job['id']}  {job['model']}  {job['state']}  {job['progress']:.0%}  {job['created']}")


@jobs.command(name="show", short_help="Show job JOB_ID as JSON.")
@click.argument("job_id")
@URL_OPTION
def jobs_show(job_id: str, url: str) -> None:
    """Job JOB_ID as JSON: state, progress, parameters, result or error, times."""
    import stevedore_server.cli.client as remote

    click.echo(orjson.dumps(remote_or_exit(remote.show_job, url, job_id), option=orjson.OPT_INDENT_2).decode())


@jobs.command(name="logs", short_help="Print the log lines of job JOB_ID.")
@click.argument("job_id")
@URL_OPTION
def jobs_logs(job_id: str, url: str) -> None:
    """Every log line of job JOB_ID."""
    import stevedore_server.cli.client as remote

    for line in remote_or_exit(remote.job_logs, url, job_id):
        click.echo(f"{line['time']} {line['level']:<7} {line['line']}")


@jobs.command(name="cancel", short_help="Cancel job JOB_ID.")
@click.argument("job_id")
@URL_OPTION
def jobs_cancel(job_id: str, url: str) -> None:
    """Cancel job JOB_ID: a queued one at once, a running one is stopped (SIGTERM, then SIGKILL)."""
    import stevedore_server.cli.client as remote

    job = remote_or_exit(remote.cancel_job, url, job_id)
    click.echo(f"{job['id']} {'cancelled' if job['state'] == 'cancelled' else 'cancelling'}")


def remote_or_exit(command: Callable[..., Any], *args: Any) -> Any:
    try:
        return command(*args)
    except StevedoreError as error:
        raise click.ClickException(str(error)) from None
