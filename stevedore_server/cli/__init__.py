"""The ``stevedore-server`` command: one click group, its commands by family.

- ``local``: run, list, check, schema, config (this machine's models);
- ``remote``: models and jobs of a running server, over HTTP (``client``);
- ``authoring``: new-plugin;
- ``deployment``: build, environment-settings, manifests, ray;
- ``options``: the settings as options, and what the families share.

The top layer: it may import every layer below, and imports the heavy ones
(the serving process, Ray, the image builder) only in the command that runs
them.
"""

from __future__ import annotations

import click

from stevedore_server.base.version import __version__

from .authoring import new_plugin
from .deployment import build, environment_settings_command, manifests, ray_serve
from .local import check, config, list_models, run, schema
from .options import RUN_SETTINGS
from .remote import jobs, models


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stevedore-server")
def main() -> None:
    """Serve the models of installed stevedore plugins, and model files, over HTTP and gRPC.

    Start with `stevedore-server run`; `stevedore-server COMMAND --help` tells a command's options."""


for command in (
    run,
    list_models,
    check,
    schema,
    config,
    models,
    jobs,
    new_plugin,
    build,
    environment_settings_command,
    manifests,
    ray_serve,
):
    main.add_command(command)

__all__ = ["RUN_SETTINGS", "main"]
