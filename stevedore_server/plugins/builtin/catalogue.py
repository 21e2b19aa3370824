"""Built-in catalogue fields: the packaging metadata of the distribution that ships each model."""

from __future__ import annotations

import functools
import platform
import sys
from collections.abc import Mapping
from email.utils import getaddresses
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stevedore_server.hookspecs import hookimpl

if TYPE_CHECKING:
    from importlib.metadata import PackageMetadata

    from stevedore_server.plugins.host import Server
    from stevedore_server.predictor import Predictor


@runtime_checkable
class RunsElsewhere(Protocol):
    """A predictor that stands for a model run in other processes (``processes.predictor.ProcessPredictor``):
    its distribution is installed where those run, maybe not here, so it says what it is and where it runs."""

    distribution_metadata: dict[str, Any] | None
    placement: dict[str, Any]


@hookimpl(trylast=True)
def stevedore_catalogue_metadata(predictor: Predictor, server: Server) -> dict[str, Any] | None:
    """Distribution name and version, author, license, summary and home page of the model's distribution, and
    where the model runs (``runs_in``)."""
    if isinstance(predictor, RunsElsewhere):
        return {**(predictor.distribution_metadata or {}), "runs_in": predictor.placement}
    runs_in = {"kind": "threads", "python": sys.executable, "python_version": platform.python_version()}
    return {**distribution_metadata(predictor, server), "runs_in": runs_in}


def distribution_metadata(predictor: Predictor, server: Server) -> dict[str, Any]:
    name = distribution_name(predictor, server)
    if name is None:
        return {}
    try:
        return wheel_metadata(distribution(name).metadata)
    except PackageNotFoundError:
        return {}


def distribution_name(predictor: Predictor, server: Server) -> str | None:
    source = server.source_of(predictor)
    if source is not None and source.distribution:
        return source.distribution
    # Registered through a hook of no distribution: find the one that ships the class's top-level package.
    top_level = type(predictor).__module__.split(".")[0]
    if top_level in sys.stdlib_module_names:
        return None
    names = import_names().get(top_level, [])
    return names[0] if names else None


@functools.cache
def import_names() -> Mapping[str, list[str]]:
    """Distributions by the top-level packages they ship (read once: it scans every installed distribution)."""
    return packages_distributions()


def wheel_metadata(metadata: PackageMetadata) -> dict[str, Any]:
    """The fields DEEPaaS users expect, from a distribution's core metadata."""
    fields = metadata.json
    author_email = fields.get("author_email")
    addresses = getaddresses([str(author_email)]) if author_email else []
    return {
        "distribution": fields.get("name"),
        "distribution_version": fields.get("version"),
        "author": fields.get("author") or ", ".join(name for name, _ in addresses if name) or None,
        "author_email": ", ".join(address for _, address in addresses if address) or None,
        "license": fields.get("license_expression") or fields.get("license"),
        "summary": fields.get("summary"),
        "home_page": fields.get("home_page") or _home_page(fields.get("project_url", [])),
    }


def _home_page(project_urls: str | list[str]) -> str | None:
    if isinstance(project_urls, str):  # a single Project-URL field comes as a string
        project_urls = [project_urls]
    for line in project_urls:
        label, _, url = line.partition(",")
        if label.strip().lower().replace("-", "").replace(" ", "") in {"homepage", "home", "source"}:
            return url.strip()
    return None
