"""The plugin author's test kit: stevedore-server's pytest plugin (the ``pytest11`` entry point ``stevedore``).

- The automatic check: one test item a predictor of the package under test,
  ``pyproject.toml::stevedore[NAME VERSION]``, which loads and self-tests it as
  the server's startup does and fails with the words ``stevedore-server check``
  prints; and one failing item a plugin of the package that does not load.
- Fixtures: ``stevedore_live_server`` (a real ``stevedore-server run`` over
  loopback serving the package under test, once a session), ``stevedore_client``
  (an ``httpx.Client`` for it) and ``stevedore_serve`` (serve predictor
  instances from a test, in this process, over a real loopback socket).

The package under test is the distribution named by ``--stevedore-distribution``
or the ``stevedore_distribution`` ini option; without either, the project of the
rootdir's ``pyproject.toml`` if it declares ``stevedore.predictors`` entry
points. Its predictors are those of its installed entry points and hooks, found
as the server finds them. Without a package under test the plugin adds nothing.

pytest loads this module in every test run where stevedore-server is installed,
so its top imports only pytest and the standard library (and so the package's
light ``__init__``); the server's modules are imported when a check is
collected or a fixture is used.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from stevedore_server.base.settings import Settings
    from stevedore_server.base.sources import PluginFailure
    from stevedore_server.core.serving import ServingModel
    from stevedore_server.kit.loopback import LiveServer
    from stevedore_server.plugins.discovery import Candidate
    from stevedore_server.plugins.hooks import Hooks

    from .predictor import Predictor

PREDICTORS_GROUP = "stevedore.predictors"
#: ``NAME`` or ``NAME: why``, as the ``stevedore_skip`` ini option lists models.
SKIP_ENTRY = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*(?::\s*(?P<reason>.*?))?\s*$")
DEFAULT_SKIP_REASON = "opted out of the automatic check (stevedore_skip)"


class NoTensorInterfaceWarning(pytest.PytestWarning):
    """A model the server serves without the Open Inference Protocol (V2): no tensor signature could be derived."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stevedore", "stevedore-server plugin checks")
    group.addoption(
        "--stevedore-distribution",
        dest="stevedore_distribution",
        metavar="NAME",
        help="The distribution whose predictors the automatic check tests and the server fixture serves "
        "(default: the stevedore_distribution ini option, else the rootdir's pyproject.toml project).",
    )
    parser.addini(
        "stevedore_distribution",
        "The distribution under test (default: the rootdir's pyproject.toml project, if it declares "
        "stevedore.predictors entry points).",
        default="",
    )
    parser.addini(
        "stevedore_skip",
        "Models left out of the automatic check and not loaded by stevedore_live_server: NAME or 'NAME: why', "
        "one a line.",
        type="linelist",
        default=[],
    )
    parser.addini(
        "stevedore_startup_timeout", "Seconds stevedore_live_server waits for the server to start.", default="120"
    )


# -- the package under test ------------------------------------------------------


@dataclass(frozen=True)
class PackageUnderTest:
    distribution: str
    #: The file naming it (its pyproject.toml, or pytest's configuration file): its checks are collected there.
    project_file: Path
    #: Models opted out of the automatic check, with why.
    skipped: Mapping[str, str]
    #: Lines of ``stevedore_skip`` that are no model name.
    bad_skip_entries: tuple[str, ...] = ()


PACKAGE = pytest.StashKey["PackageUnderTest | None"]()


def package_under_test(config: pytest.Config) -> PackageUnderTest | None:
    if PACKAGE not in config.stash:
        config.stash[PACKAGE] = find_package_under_test(config)
    return config.stash[PACKAGE]


def find_package_under_test(config: pytest.Config) -> PackageUnderTest | None:
    pyproject = config.rootpath / "pyproject.toml"
    named = config.getoption("stevedore_distribution") or config.getini("stevedore_distribution")
    if named:
        project_file = pyproject if pyproject.is_file() else config.inipath or pyproject
        return PackageUnderTest(named, project_file, *opted_out(config))
    project = read_project(pyproject)
    name = project.get("name")
    if not isinstance(name, str) or PREDICTORS_GROUP not in project.get("entry-points", {}):
        return None
    return PackageUnderTest(name, pyproject, *opted_out(config))


def read_project(pyproject: Path) -> dict[str, Any]:
    """The ``[project]`` table of a pyproject.toml; empty without one (pytest reports a malformed file itself)."""
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return project if isinstance(project, dict) else {}


def opted_out(config: pytest.Config) -> tuple[dict[str, str], tuple[str, ...]]:
    skipped, bad = {}, []
    for line in config.getini("stevedore_skip"):
        match = SKIP_ENTRY.match(line)
        if match is None:
            bad.append(line)
        else:
            skipped[match["name"]] = match["reason"] or DEFAULT_SKIP_REASON
    return skipped, tuple(bad)


def require_package(config: pytest.Config) -> PackageUnderTest:
    package = package_under_test(config)
    if package is None:
        pytest.fail(
            "stevedore: no package under test: name its distribution with the stevedore_distribution ini option "
            "(or --stevedore-distribution), or run pytest where the project's pyproject.toml declares "
            f"{PREDICTORS_GROUP} entry points",
            pytrace=False,
        )
    return package


# -- its predictors, found as the server finds them ------------------------------


@dataclass(frozen=True)
class Discovered:
    """The predictors of the package under test and its plugins that failed, as ``startup.find`` gives them;
    or why there is nothing to check."""

    settings: Settings
    candidates: list[Candidate] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    hooks: Hooks | None = None
    problem: str | None = None


DISCOVERED = pytest.StashKey[Discovered]()


def discovered(config: pytest.Config) -> Discovered:
    if DISCOVERED not in config.stash:
        config.stash[DISCOVERED] = discover(require_package(config).distribution)
    return config.stash[DISCOVERED]


def discover(distribution: str) -> Discovered:
    from importlib.metadata import PackageNotFoundError, metadata

    from stevedore_server.base.errors import StevedoreError
    from stevedore_server.base.settings import Settings

    from .core import startup

    settings = Settings(plugins=(distribution,))
    try:
        metadata(distribution)
    except PackageNotFoundError:
        return Discovered(settings, problem=not_installed(distribution))
    try:
        candidates, failures, hooks = startup.find(settings)
    except StevedoreError as error:  # a duplicate model, an unknown hook: the server would not start
        return Discovered(settings, problem=f"Error: {error}")
    if not candidates and not failures:
        return Discovered(settings, problem=f"no models found: {distribution} provides no {PREDICTORS_GROUP}")
    return Discovered(settings, candidates, failures, hooks)


def not_installed(distribution: str) -> str:
    return (
        f"the package under test, {distribution}, is not installed in this environment: install it "
        "(pip install -e .); its predictors are those of its installed entry points, as the server finds them"
    )


# -- the automatic check -----------------------------------------------------------


class StevedoreCheck(pytest.File):
    """The automatic check of the package under test, collected at the file that names it."""

    def collect(self) -> Iterable[pytest.Item]:
        package = require_package(self.config)
        found = discovered(self.config)
        if found.problem is not None:
            yield self.failed(package.distribution, found.problem)
        yield from self.plugin_checks(found.failures)
        yield from self.route_checks(found)
        for candidate in found.candidates:
            predictor = candidate.predictor
            name = f"{predictor.name} {predictor.version}"
            item = PredictorCheck.from_parent(
                self, name=f"stevedore[{name}]", candidate=candidate, settings=found.settings, hooks=found.hooks
            )
            if predictor.name in package.skipped:
                item.add_marker(pytest.mark.skip(reason=package.skipped[predictor.name]))
            yield item
        problems = skip_problems(package, found)
        if problems:
            yield self.failed("stevedore_skip", "; ".join(problems))

    def failed(self, name: str, message: str) -> FailedCheck:
        return FailedCheck.from_parent(self, name=f"stevedore[{name}]", message=message)

    def plugin_checks(self, failures: list[PluginFailure]) -> Iterator[pytest.Item]:
        from stevedore_server.kit.checking import plugin_line

        for failure in failures:
            yield self.failed(f"plugin {failure.source.entry_point}", report_text(self.config, [plugin_line(failure)]))

    def route_checks(self, found: Discovered) -> Iterator[pytest.Item]:
        """A failing item for the package's broken routes (``stevedore_routes``), checked once with every model
        of the package: a route may go under any model of its plugin."""
        from stevedore_server.kit.checking import route_problems

        if found.hooks is None or not found.candidates:
            return
        problems = route_problems(found.settings, found.candidates, found.hooks)
        if problems:
            yield self.failed("routes", report_text(self.config, problems))


def skip_problems(package: PackageUnderTest, found: Discovered) -> list[str]:
    """What is wrong with ``stevedore_skip``: lines that name no model, models the package does not provide."""
    problems = [f"stevedore_skip: {line!r} is not NAME or 'NAME: why'" for line in package.bad_skip_entries]
    unknown = sorted(set(package.skipped) - {candidate.predictor.name for candidate in found.candidates})
    if unknown and not found.failures and found.problem is None:  # a plugin that does not load may provide them
        problems.append(f"stevedore_skip names {', '.join(unknown)}, which {package.distribution} does not provide")
    return problems


class Check(pytest.Item):
    """A test item of the automatic check; its failure is told in words, without a traceback of the kit."""

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"stevedore-server check: {self.name}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from stevedore_server.base.errors import CheckFailed

        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)


class FailedCheck(Check):
    """A failure found while collecting: a plugin that does not load, or a package that cannot be checked."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def runtest(self) -> None:
        from stevedore_server.base.errors import CheckFailed

        raise CheckFailed(self.message)


class PredictorCheck(Check):
    """One predictor loaded, self-tested and given its serving state as at startup."""

    def __init__(self, *, candidate: Candidate, settings: Settings, hooks: Hooks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.candidate, self.settings, self.hooks = candidate, settings, hooks

    def runtest(self) -> None:
        from stevedore_server.base.errors import CheckFailed
        from stevedore_server.kit.checking import check_one

        model, report = check_one(self.settings, self.candidate, self.hooks)
        if report.failures:
            raise CheckFailed(report_text(self.config, report.failures))
        if model.signature is None:
            problem = tensor_problem(model)
            if problem is not None:
                raise CheckFailed(problem)
            warning = f"{model.name} {model.version} has no V2 interface: {model.no_tensor_reason}"
            self.warn(NoTensorInterfaceWarning(warning))


def tensor_problem(model: ServingModel) -> str | None:
    """Why declared tensors cannot be served; None when the model has its tensors or declares none."""
    predictor = model.predictor
    if model.signature is not None or not (predictor.tensor_inputs or predictor.tensor_outputs):
        return None
    return (
        f"{model.name} {model.version}: the server serves it without its declared tensors (no Open Inference "
        f"Protocol routes): {model.no_tensor_reason}"
    )


def report_text(config: pytest.Config, lines: Iterable[str]) -> str:
    distribution = require_package(config).distribution
    return "\n".join([*lines, f"(as `stevedore-server check --plugins {distribution}` reports it)"])


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> StevedoreCheck | None:
    """The checks, where a run collects the file naming the package under test (``pytest pyproject.toml``)."""
    package = package_under_test(parent.config)
    if package is None or file_path != package.project_file:
        return None
    return StevedoreCheck.from_parent(parent, path=file_path)


@pytest.hookimpl(tryfirst=True)  # before -k and -m select: they apply to the checks too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The checks in a run of the default paths (``pytest``, ``testpaths``) that did not collect them already.

    A run of paths named on the command line has them only if it names the project file."""
    package = package_under_test(config)
    if package is None or config.args_source is pytest.Config.ArgsSource.ARGS:
        return
    if not any(isinstance(item, Check) for item in items):
        items.extend(session.genitems(StevedoreCheck.from_parent(session, path=package.project_file)))


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def stevedore_live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A real ``stevedore-server run`` of this Python serving the package under test (``--plugins``) on free
    loopback ports, ready; stopped by its pid after the session. Models opted out of the automatic check are
    listed but not loaded. ``.url``, ``.grpc_target``, ``.log()``."""
    from stevedore_server.kit.loopback import LiveServer

    config = request.config
    package = require_package(config)
    found = discovered(config)
    if found.problem is not None:
        pytest.fail(f"stevedore_live_server: {found.problem}", pytrace=False)
    log_path = tmp_path_factory.mktemp("stevedore-live-server") / "server.log"
    args = ("--plugins", package.distribution, "--load-models", models_to_load(package, found))
    server = LiveServer.start(log_path, *args)
    try:
        problem = not_serving(server, float(config.getini("stevedore_startup_timeout")))
        if problem is not None:
            pytest.fail(f"stevedore_live_server: {package.distribution}: {problem}", pytrace=False)
        yield server
    finally:
        server.stop()


def models_to_load(package: PackageUnderTest, found: Discovered) -> str:
    """``--load-models``: all but the opted out."""
    if not package.skipped:
        return "all"
    names = dict.fromkeys(c.predictor.name for c in found.candidates if c.predictor.name not in package.skipped)
    return ",".join(names) or "none"


def not_serving(server: LiveServer, timeout: float) -> str | None:
    """Why the server does not serve, once started; None when it is ready."""
    try:
        status, body = server.wait_until_serving(timeout)
    except (TimeoutError, ChildProcessError) as error:
        return str(error)
    if status == 200:
        return None
    reasons = body.get("reasons") if isinstance(body, dict) else None
    return f"the server is not ready ({status}): {'; '.join(reasons or [])} (its log: {server.log_path})"


@pytest.fixture
def stevedore_client(stevedore_live_server: LiveServer) -> Iterator[httpx.Client]:
    """An ``httpx.Client`` for ``stevedore_live_server`` (its base URL set)."""
    import httpx

    with httpx.Client(base_url=stevedore_live_server.url, timeout=60) as client:
        yield client


@pytest.fixture
def stevedore_serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., httpx.Client]]:
    """``serve(*predictors, settings=None)``: serve predictor instances (no entry point needed) in this process,
    over a real loopback socket, as the server would (loaded and self-tested; one that fails answers 503 with
    its reason); returns an ``httpx.Client`` for it. Stopped after the test."""
    import httpx

    from stevedore_server.kit.loopback import ThreadServer

    timeout = float(request.config.getini("stevedore_startup_timeout"))
    servers: list[ThreadServer] = []
    clients: list[httpx.Client] = []

    def serve(*predictors: Predictor, settings: Settings | None = None) -> httpx.Client:
        servers.append(ThreadServer.serving(predictors, settings, timeout))
        clients.append(httpx.Client(base_url=servers[-1].url, timeout=60))
        return clients[-1]

    yield serve
    for client in clients:
        client.close()
    for server in servers:
        server.stop()
