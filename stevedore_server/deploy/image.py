"""``stevedore-server build``: a container image with plugins preinstalled, from an installed package.

Writes a build context (the Containerfile and a wheelhouse made with pip in the
current environment), then calls Podman or Docker. No clone of the repository
is needed: the core's own wheel is rebuilt from its source tree where it was
installed from one, else repacked from the installed files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib.metadata import Distribution, distribution
from importlib.resources import files
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from stevedore_server.base.errors import BuildError

logger = logging.getLogger("stevedore.build")

CORE = "stevedore-server"
ENGINES = ("podman", "docker")
DEFAULT_BASE_IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


#: Where the image has each isolated plugin's virtual environment (``ISOLATED_DIR/<distribution>``).
ISOLATED_DIR = "/opt/stevedore-envs"

#: An image reference, as the distribution spec's grammar has it: ``[host[:port]/]path[:tag][@digest]``. Nothing
#: else goes into the Containerfile's ``ARG BASE_IMAGE=`` line: no space, quote, ``$`` or line break.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])"
#: A distribution's name (the core metadata specification's).
PROJECT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


@dataclass(frozen=True)
class BuildContext:
    directory: Path
    server_version: str
    plugins: tuple[tuple[str, str], ...]  # (distribution, version)
    #: Plugins in virtual environments of their own.
    isolated: tuple[tuple[str, str], ...] = ()

    @property
    def plugin_label(self) -> str:
        return ",".join(f"{name}=={version}" for name, version in self.plugins)

    @property
    def isolated_label(self) -> str:
        return ",".join(f"{name}=={version}" for name, version in self.isolated)


def write_context(
    directory: Path, plugins: list[str], base_image: str = DEFAULT_BASE_IMAGE, isolated: list[str] | None = None
) -> BuildContext:
    """The build context in ``directory``: Containerfile, the wheelhouse and its requirements.txt, and one
    wheelhouse under ``isolated/`` for each plugin installed in an environment of its own."""
    check_base_image(base_image)
    for plugin in [*plugins, *(isolated or [])]:
        check_plugin(plugin)
    if directory.exists() and any(directory.iterdir()):
        raise BuildError(f"{directory} exists and is not empty")
    core = core_source(directory / "core-wheel")
    pinned = wheelhouse_of(directory / "wheelhouse", core, plugins)
    isolated_pinned = []
    (directory / "isolated").mkdir()
    for plugin in isolated or []:
        name = canonicalize_name(plugin_name(plugin))
        isolated_pinned += wheelhouse_of(directory / "isolated" / name, core, [plugin])[1:]
    shutil.rmtree(directory / "core-wheel", ignore_errors=True)
    context = BuildContext(directory, pinned[0][1], tuple(pinned[1:]), tuple(isolated_pinned))
    (directory / "Containerfile").write_text(containerfile(context, base_image))
    return context


def wheelhouse_of(wheelhouse: Path, core: Path, plugins: list[str]) -> list[tuple[str, str]]:
    """A wheelhouse of the core, ``plugins`` and their dependencies, resolved together, with the requirements.txt
    pinning the core and the plugins; (name, version) of each of those."""
    wheelhouse.mkdir(parents=True)
    pip_wheel(wheelhouse, [str(core), *plugins])
    built = wheel_versions(wheelhouse)
    names = [CORE, *(plugin_name(plugin) for plugin in plugins)]
    missing = [name for name in names if canonicalize_name(name) not in built]
    if missing:
        raise BuildError(f"pip made no wheel for {', '.join(missing)}")
    pinned = [(name, built[canonicalize_name(name)]) for name in names]
    (wheelhouse / "requirements.txt").write_text("".join(f"{name}=={version}\n" for name, version in pinned))
    return pinned


def containerfile(context: BuildContext, base_image: str) -> str:
    """The packaged Containerfile with this build's base image, version and plugins as argument defaults."""
    check_base_image(base_image)
    text = files(__package__).joinpath("container/Containerfile").read_text()
    defaults = {
        "BASE_IMAGE": base_image,
        "SERVER_VERSION": context.server_version,
        "PLUGINS": context.plugin_label or "none",
        "ISOLATED_PLUGINS": context.isolated_label or "none",
    }
    lines = []
    for line in text.splitlines():
        name = line.removeprefix("ARG ").split("=")[0]
        lines.append(f"ARG {name}={defaults[name]}" if line.startswith("ARG ") and name in defaults else line)
    return "\n".join(lines) + "\n"


def check_base_image(reference: str) -> str:
    """``reference`` if it is an image reference (``python:3.11-slim``, ``registry:5000/team/base@sha256:...``);
    BuildError otherwise, before it is written into the Containerfile."""
    if IMAGE_REFERENCE.fullmatch(reference) is None:
        raise BuildError(
            f"base image {reference!r} is not an image reference such as python:3.11-slim or "
            "registry.example:5000/team/python:3.11 (lower-case path; a tag, a digest; no spaces or other syntax)"
        )
    return reference


def check_plugin(plugin: str) -> str:
    """``plugin`` if it names a wheel, a source directory or a requirement; BuildError before pip sees it
    otherwise: a value starting with ``-`` would be one of pip's options (``--index-url=...``)."""
    if plugin.startswith("-"):
        raise BuildError(
            f"plugin {plugin!r} looks like an option: give a wheel file, a source directory or a requirement "
            "(pip's own options go in its environment variables or configuration, such as PIP_INDEX_URL)"
        )
    plugin_name(plugin)
    return plugin


def plugin_name(plugin: str) -> str:
    """The distribution name of a ``--plugin``: a wheel file, a source directory or a requirement."""
    path = Path(plugin)
    if plugin.endswith(".whl"):
        try:
            return str(parse_wheel_filename(path.name)[0])
        except InvalidWheelFilename as error:
            raise BuildError(f"plugin {plugin!r} is not a wheel's file name: {error}") from None
    if path.is_dir():
        try:
            name = str(tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"])
        except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
            raise BuildError(f"{plugin}: no project name in its pyproject.toml ({error})") from None
        if PROJECT_NAME.fullmatch(name) is None:  # it names a directory of the context and goes in a label
            raise BuildError(f"{plugin}: its pyproject.toml's project name {name!r} is not a valid project name")
        return name
    try:
        return Requirement(plugin).name
    except InvalidRequirement as error:
        raise BuildError(f"plugin {plugin!r} is neither a wheel, a directory nor a requirement: {error}") from None


def pip_wheel(wheelhouse: Path, requirements: list[str]) -> None:
    # ``--``: whatever the requirements are, pip reads none of them as an option.
    command = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheelhouse), "--", *requirements]
    logger.info("building the wheelhouse: %s", " ".join(command))
    if subprocess.run(command, check=False).returncode != 0:
        raise BuildError("pip could not build the wheelhouse; see its output above")


def wheel_versions(wheelhouse: Path) -> dict[str, str]:
    versions = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        versions[str(name)] = str(version)
    return versions


def core_source(scratch: Path) -> Path:
    """What pip can build the core's wheel from: its source tree, or a wheel repacked from the installed files."""
    dist = distribution(CORE)
    origin = json.loads(dist.read_text("direct_url.json") or "{}")
    url = origin.get("url", "")
    if url.startswith("file://") and "dir_info" in origin:
        tree = Path(url.removeprefix("file://"))
        if (tree / "pyproject.toml").is_file():
            return tree
    return repack(dist, scratch)


def repack(dist: Distribution, directory: Path) -> Path:
    """A wheel of an installed pure-Python distribution, from the files its RECORD lists."""
    directory.mkdir(parents=True, exist_ok=True)
    name = str(dist.metadata["Name"]).replace("-", "_")
    wheel = directory / f"{name}-{dist.version}-py3-none-any.whl"
    dist_info = f"{name}-{dist.version}.dist-info"
    skipped = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for packaged in dist.files or []:
            parts = packaged.parts
            if parts[0].startswith("..") or "__pycache__" in parts:
                continue  # console scripts and bytecode are made again at install
            if parts[0] == dist_info and parts[-1] in skipped:
                continue
            data = Path(str(dist.locate_file(packaged))).read_bytes()
            archive.writestr(packaged.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{packaged.as_posix()},sha256={digest},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def find_engine(preferred: str | None) -> str:
    for engine in [preferred] if preferred else ENGINES:
        if engine and shutil.which(engine):
            return engine
    wanted = preferred or " or ".join(ENGINES)
    raise BuildError(
        f"no container engine found ({wanted} is not on PATH): install Podman or Docker (Colima provides docker), "
        "or write the context with --output-context DIR and build it elsewhere"
    )


def build_image(context: BuildContext, engine: str, tag: str) -> None:
    """Build with the engine, its progress streamed to the terminal."""
    command = [engine, "build", "--file", str(context.directory / "Containerfile"), "--tag", tag]
    if Path(engine).name == "podman":
        command += ["--format", "docker"]  # keeps HEALTHCHECK, which the OCI format drops
    command.append(str(context.directory))
    logger.info("building the image: %s", " ".join(command))
    returncode = subprocess.run(command, check=False).returncode
    if returncode != 0:
        raise BuildError(f"{engine} build failed (exit {returncode}); see its output above")
