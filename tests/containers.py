"""Images for the container tier: Podman builds with chroot isolation, and the example image the tier tests.

No public base image can be pulled here, so the base is a minimal Debian made
with debootstrap and imported into Podman's storage, where it stays between
runs on one machine. Builds use chroot isolation (``BUILDAH_ISOLATION``), and
every pip step reads the local wheelhouse: containers cannot reach the index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from .venvs import Venv, environment_snapshot, pinned_plugin, run_command

BASE_IMAGE = "localhost/stevedore-test-base:bookworm"
DEBIAN_MIRROR = os.environ.get("STEVEDORE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BUILD_TIMEOUT = 900
CONTAINER_ENV = {"BUILDAH_ISOLATION": "chroot"}
#: The example image's name among the setups of the session's head start (``headstart.py``).
EXAMPLE_IMAGE = "example image"


def engine(*args: str, check: bool = True, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return run_command(["podman", *args], env=environment_snapshot() | CONTAINER_ENV, check=check, timeout=timeout)


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_command(["buildah", *args], env=environment_snapshot() | CONTAINER_ENV, check=check)


def image_exists(name: str) -> bool:
    return engine("image", "exists", name, check=False).returncode == 0


def ensure_base_image(root: Path) -> str:
    """Debian with python3 and venv, made with debootstrap (in ``root``) unless this machine's Podman has it from
    a run before."""
    for tool in ("podman", "buildah", "debootstrap"):
        assert shutil.which(tool), f"{tool} is not installed: `make test` installs it with apt-get"
    if not image_exists(BASE_IMAGE):
        rootfs = root / "rootfs"
        debootstrap = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm"]
        run_command([*debootstrap, str(rootfs), DEBIAN_MIRROR], timeout=BUILD_TIMEOUT)
        # On the head start's thread: each fork gets an environment copied before it (see ``run_command``).
        tar_command = ["tar", "-C", str(rootfs), "-c", "."]
        tar = subprocess.Popen(tar_command, stdout=subprocess.PIPE, env=environment_snapshot())
        imported = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, env=environment_snapshot()
        )
        assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
        shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_IMAGE


def core_only_venv(root: Path, wheelhouse: Path) -> Venv:
    """What a user has after ``pip install stevedore-server``: no clone of the repository."""
    environment = Venv.create(root / "venv", wheelhouse)
    environment.install("stevedore-server")
    return environment


def build(
    environment: Venv, wheelhouse: Path, tag: str, *plugins: Path, isolated: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``stevedore-server build`` as a user runs it; pip reads the wheelhouse (and the directories of the
    ``isolated`` plugins' wheels) instead of the index."""
    options = [arg for plugin in plugins for arg in ("--plugin", str(plugin))]
    options += [arg for plugin in isolated for arg in ("--isolated-plugin", str(plugin))]
    links = " ".join(str(directory) for directory in (wheelhouse, *(plugin.parent for plugin in isolated)))
    env = environment.env(PIP_NO_INDEX="1", PIP_FIND_LINKS=links, **CONTAINER_ENV)
    command = ["build", *options, "--tag", tag, "--engine", "podman", "--base-image", BASE_IMAGE]
    return environment.run("stevedore-server", *command, env=env, check=False, timeout=BUILD_TIMEOUT)


def remove_image(tag: str) -> None:
    engine("rmi", "--force", tag, check=False)
    engine("image", "prune", "--force", check=False)  # the build's intermediate stage


@dataclass(frozen=True)
class ExampleBuild:
    """The example plugin's image (maybe failed to build: see ``result``), and the venv that built it."""

    tag: str
    result: subprocess.CompletedProcess[str]
    builder: Venv


def build_example_image(root: Path, wheelhouse: Path) -> ExampleBuild:
    """The example plugin's image, built from its wheel by a venv with only the core, with the scikit-learn runtime
    and the pinned test plugin in an environment of its own (``--isolated-plugin``); made in ``root``."""
    ensure_base_image(root)
    builder = core_only_venv(root / "builder", wheelhouse)
    tag = f"localhost/stevedore-test-example:{uuid.uuid4().hex[:8]}"
    (plugin_wheel,) = wheelhouse.glob("stevedore_sklearn_logreg-*.whl")
    (runtime_wheel,) = wheelhouse.glob("stevedore_runtime_sklearn-*.whl")  # model files, as KServe mounts them
    links = pinned_plugin(root / "isolated", "old", "0.12.1", wheelhouse)
    (isolated_wheel,) = links.glob("stevedore_test_pinned_old-*.whl")
    built = build(builder, wheelhouse, tag, plugin_wheel, runtime_wheel, isolated=(isolated_wheel,))
    return ExampleBuild(tag, built, builder)
