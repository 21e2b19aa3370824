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
from packaging.utils import canonicalize_name, parse_wheel_filename

from stevedore_server.base.errors import BuildError

logger = logging.getLogger("stevedore.build")

CORE = "stevedore-server"
ENGINES = ("podman", "docker")
DEFAULT_BASE_IMAGE = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


#: Where the image has each isolated plugin's virtual environment (``ISOLATED_DIR/<distribution>``).
ISOLATED_DIR = "/opt/stevedore-envs"


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


def plugin_name(plugin: str) -> str:
    """The distribution name of a ``--plugin``: a wheel file, a source directory or a requirement."""
    path = Path(plugin)
    if plugin.endswith(".whl"):
        return str(parse_wheel_filename(path.name)[0])
    if path.is_dir():
        try:
            return str(tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"])
        except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
            raise BuildError(f"{plugin}: no project name in its pyproject.toml ({error})") from None
    try:
        return Requirement(plugin).name
    except InvalidRequirement as error:
        raise BuildError(f"--plugin {plugin!r} is neither a wheel, a directory nor a requirement: {error}") from None


def pip_wheel(wheelhouse: Path, requirements: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheelhouse), *requirements]
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
