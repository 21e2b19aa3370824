"""The plugin author's command: ``new-plugin``, a ready-to-build plugin package."""

from __future__ import annotations

from pathlib import Path

import click

from stevedore_server.base.errors import StevedoreError


@click.command(name="new-plugin", short_help="Create a ready-to-build plugin package.")
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
