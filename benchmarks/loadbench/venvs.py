"""One virtual environment per target, kept between runs and rebuilt when what it is made from changes.

The ``ours`` environment holds stevedore-server with its ``otel`` extra (the
OpenTelemetry SDK and exporters), its example plugin, the benchmark's
GIL-holding plugin and the scikit-learn runtime (``plugins/sklearn``), built
from this working tree (non-editable, from a clean copy of the files git
would commit). A change to their code reinstalls just those; a change to their
``pyproject.toml`` or to any requirements or constraints file rebuilds the
environment. ``ours-ray`` is the same with the ``ray`` extra, in an environment
of its own: Ray and its dependencies stay out of the one the other targets of
ours run in. ``ours-no-otel`` is ``ours`` without the ``otel`` extra, the
baseline of what having it installed (tracing off) costs. The two Ray
environments share a second constraints file, so that ours and the baseline
run the same Ray, FastAPI, Starlette and protobuf.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .records import Records
from .settings import BENCH_DIR, REPO_DIR, BenchSettings

REQUIREMENTS = BENCH_DIR / "requirements"
PINS = REQUIREMENTS / "pins.txt"
#: Also applied to the Ray environments: ours and the baseline on the same Ray stack.
RAY_PINS = REQUIREMENTS / "ray-pins.txt"
#: Distributions whose versions each run records, where installed.
REPORTED = (
    "stevedore-server", "stevedore-runtime-sklearn", "skops", "mlserver", "mlserver-sklearn", "kserve",
    "scikit-learn", "numpy", "fastapi",
    "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "orjson", "grpcio", "protobuf", "tritonclient", "ray",
    "opentelemetry-sdk", "opentelemetry-proto", "mcp", "openai", "httpx", "litserve",
)  # fmt: skip


class InstallFailed(Exception):
    """pip, venv or git could not make an environment; the message names the log."""


@dataclass(frozen=True)
class LocalProject:
    """A project of this repository, installed from the files git lists under ``path`` in ``include``."""

    path: str
    include: tuple[str, ...]
    #: Its optional dependencies installed with it (``ray``: pip installs ``path[ray]``).
    extras: tuple[str, ...] = ()

    def requirement(self, stage: Path) -> str:
        """What pip is given: the project's staged copy, with its extras."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{stage / self.path}{extras}"


@dataclass(frozen=True)
class Environment:
    name: str
    requirements: Path
    local_projects: tuple[LocalProject, ...] = ()
    #: Applied with ``pip -c``.
    constraints: tuple[Path, ...] = (PINS,)


SERVER = LocalProject(".", ("pyproject.toml", "README.md", "LICENSE", "stevedore_server"))
PLUGIN = LocalProject("contrib/sklearn_logreg", ("pyproject.toml", "README.md", "stevedore_sklearn_logreg"))
#: The iris model behind pure Python that holds the GIL: models in processes against threads.
GIL_PLUGIN = LocalProject("benchmarks/plugins/iris_gil", ("pyproject.toml", "stevedore_bench_iris_gil"))
#: The scikit-learn runtime: the exported model file served with no code (ours-runtime, ours-mlserver).
SKLEARN_RUNTIME = LocalProject("plugins/sklearn", ("pyproject.toml", "README.md", "stevedore_runtime_sklearn"))

#: Ours's tracing (issue 27): in ``ours``, not in ``ours-no-otel``.
OTEL_SERVER = replace(SERVER, extras=("otel",))

ENVIRONMENTS = {
    env.name: env
    for env in (
        Environment("tools", REQUIREMENTS / "tools.txt"),
        Environment("floor", REQUIREMENTS / "floor.txt"),
        Environment("mlserver", REQUIREMENTS / "mlserver.txt"),
        Environment("kserve", REQUIREMENTS / "kserve.txt"),
        Environment("ours", REQUIREMENTS / "ours.txt", (OTEL_SERVER, PLUGIN, GIL_PLUGIN, SKLEARN_RUNTIME)),
        Environment("ours-no-otel", REQUIREMENTS / "ours.txt", (SERVER, PLUGIN, GIL_PLUGIN, SKLEARN_RUNTIME)),
        Environment(
            "ours-ray", REQUIREMENTS / "ours-ray.txt", (replace(SERVER, extras=("ray",)), PLUGIN), (PINS, RAY_PINS)
        ),
        Environment("ray", REQUIREMENTS / "ray.txt", constraints=(PINS, RAY_PINS)),
        #: The LLM benchmark's client: the official openai SDK (servers/openai_stream.py).
        Environment("llm-client", REQUIREMENTS / "llm-client.txt"),
        #: LitServe with its OpenAISpec, next to ours in the LLM benchmark (servers/litserve_llm.py).
        Environment("litserve", REQUIREMENTS / "litserve.txt"),
    )
}


@dataclass(frozen=True)
class Installed:
    path: Path
    #: Seconds spent installing in this run; None when the environment was already up to date.
    install_seconds: float | None
    versions: dict[str, str]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "little") + part)
    return sha.hexdigest()[:16]


def run_logged(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("a") as output:
        output.write(f"$ {' '.join(argv)}\n")
        output.flush()
        result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, cwd=cwd, check=False)
    if result.returncode != 0:
        raise InstallFailed(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed (log: {log})")


def project_files(project: LocalProject) -> list[str]:
    """Repository-relative paths of the project's files that git would commit (tracked or new, not ignored)."""
    listing = subprocess.run(
        [
            "git",
            "-C",
            str(REPO_DIR),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            project.path,
        ],
        capture_output=True,
        check=False,
    )
    if listing.returncode != 0:
        raise InstallFailed(f"git ls-files failed in {REPO_DIR}: {listing.stderr.decode(errors='replace')[:200]}")
    prefix = "" if project.path == "." else project.path + "/"
    names = sorted(set(listing.stdout.decode().split("\0")) - {""})
    return [
        name for name in names
        if name.removeprefix(prefix).split("/")[0] in project.include and (REPO_DIR / name).is_file()
    ]  # fmt: skip


def source_files(environment: Environment) -> list[str]:
    return [name for project in environment.local_projects for name in project_files(project)]


def dependency_stamp(environment: Environment, python: str) -> str:
    """What the environment's dependencies come from: the Python, the pins, requirements, pyproject files."""
    files = [*environment.constraints, environment.requirements]
    files += [REPO_DIR / project.path / "pyproject.toml" for project in environment.local_projects]
    # A project's extras too (``ours`` has ``otel``, ``ours-no-otel`` not): an extra added or removed rebuilds.
    extras = [
        f"{project.path}[{','.join(project.extras)}]".encode()
        for project in environment.local_projects
        if project.extras
    ]
    return digest(python.encode(), *(path.read_bytes() for path in files), *extras)


def source_stamp(files: list[str]) -> str:
    return digest(*(part for name in files for part in (name.encode(), (REPO_DIR / name).read_bytes())))


def stage_sources(files: list[str], stage: Path) -> None:
    """A clean copy of the local projects: no build/ or egg-info from earlier builds gets into the wheels."""
    shutil.rmtree(stage, ignore_errors=True)
    for name in files:
        target = stage / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_DIR / name, target)


def stamp_of(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def pip_install(venv: Path, args: list[str], log: Path) -> None:
    run_logged([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *args], log)


def ensure(environment: Environment, root: Path, python: str, log: Path) -> Installed:
    """The environment, made or brought up to date; raises InstallFailed."""
    venv = root / environment.name
    stage = root / f"{environment.name}-src"
    started = time.monotonic()
    deps = dependency_stamp(environment, python_identity(python))
    files = source_files(environment)
    sources = source_stamp(files) if files else ""
    local = [project.requirement(stage) for project in environment.local_projects]
    rebuilt = stamp_of(venv / ".bench-deps") != deps
    if rebuilt:
        shutil.rmtree(venv, ignore_errors=True)
        if files:
            stage_sources(files, stage)
        run_logged([python, "-m", "venv", str(venv)], log)
        constraints = [arg for path in environment.constraints for arg in ("-c", str(path))]
        pip_install(venv, [*constraints, "-r", str(environment.requirements), *local], log)
        (venv / ".bench-deps").write_text(deps)
    elif files and stamp_of(venv / ".bench-sources") != sources:
        stage_sources(files, stage)
        pip_install(venv, ["--no-deps", "--force-reinstall", *local], log)
    else:
        return Installed(venv, None, installed_versions(venv))
    (venv / ".bench-sources").write_text(sources)
    return Installed(venv, round(time.monotonic() - started, 1), installed_versions(venv))


def python_identity(python: str) -> str:
    """The interpreter's path and version: a venv made from another Python must be rebuilt."""
    found = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
    if found.returncode != 0:
        raise InstallFailed(f"cannot run {python}: {found.stderr.strip()[:200]}")
    return f"{python} {found.stdout.strip()}"


VERSIONS_SCRIPT = """
import json, sys
from importlib import metadata
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def installed_versions(venv: Path) -> dict[str, str]:
    # Run from the venv: in the repository, its *.egg-info would be found as if installed.
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", VERSIONS_SCRIPT, *REPORTED], capture_output=True, text=True, cwd=venv
    )
    try:
        return dict(json.loads(found.stdout))
    except ValueError:
        return {}


def record_distribution(site: Path, distribution: str, entry_points: str) -> Path:
    """A plugin's distribution recorded on ``site`` (for ``PYTHONPATH``), ``entry_points`` (the text of an
    ``entry_points.txt``) found as an installed one's: a benchmark's own plugin, with no wheel to build."""
    info = site / f"{distribution.replace('-', '_')}-1.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


def ours_for(target: str, settings: BenchSettings, run_dir: Path, records: Records) -> Path:
    """The ``ours`` environment installed (or updated) for a scenario run on its own (``target``), its versions
    recorded; the run stops with the reason when it cannot be installed."""
    log = run_dir / "logs" / "install-ours.log"
    try:
        installed = ensure(ENVIRONMENTS["ours"], settings.venvs, settings.python, log)
    except InstallFailed as error:
        raise SystemExit(f"the ours environment could not be installed: {error}") from None
    records.add("versions", environment="ours", targets=[target], versions=installed.versions)
    return installed.path
