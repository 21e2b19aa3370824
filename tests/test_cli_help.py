"""The command line's help as a person reads it: summaries that end where a sentence ends, ``run --help`` in
sections with examples, defaults as a user writes them, choices for the enumerated options; and what the commands
that talk to a running server say, run as a user runs them (the real ``stevedore-server``, a real server)."""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from stevedore_server.base.errors import StartupError
from stevedore_server.base.settings import Settings
from stevedore_server.cli import RUN_SETTINGS, main
from stevedore_server.cli.local import run
from stevedore_server.cli.options import CHOICES, KSERVE_OPTIONS, RUN_SECTIONS, SECTIONS

from .venvs import Server, Venv, free_port, run_command

#: The sections of ``run --help``, in order, then the help option's.
RUN_TITLES = [*RUN_SECTIONS, "Other options"]
#: A row of a help's definition list: its term (an option or a command) and the start of its text.
ROW = re.compile(r"^  (?P<term>\S.*?)(?:\s{2,}(?P<text>\S.*))?$")
#: Widths the help is read at: click's default, and a narrow terminal (where click would cut a long summary).
WIDTHS = (80, 50)


def help_of(*path: str, width: int = 80) -> str:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="stevedore-server", terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def sections(text: str) -> dict[str, list[str]]:
    """A help's sections (``Title:`` at the left margin), each its lines."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if re.fullmatch(r"\S[^:]*:", line):
            current = found.setdefault(line[:-1], [])
        elif current is not None:
            current.append(line)
    return found


def rows(lines: list[str], options: bool = False) -> dict[str, str]:
    """A section's definition list: each term with its whole text (wrapped lines joined); with ``options``, only
    the options (not the section's note above them)."""
    if options and lines and not lines[0].startswith("  -"):  # a note, then a blank line, then the options
        lines = lines[lines.index("") + 1 :]
    found: dict[str, str] = {}
    term = None
    for line in lines:
        match = ROW.match(line)
        if match and not line.startswith("   "):
            term = match["term"].strip()
            found[term] = match["text"] or ""
        elif term is not None and line.startswith("   ") and line.strip():
            found[term] = (found[term] + " " + line.strip()).strip()
    return found


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand under ``group``, as the words that call it."""
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


def command_at(path: tuple[str, ...]) -> click.Command:
    found: click.Command = main
    for name in path:
        assert isinstance(found, click.Group)
        found = found.commands[name]
    return found


GROUPS = [(), *(path for path in command_paths(main) if isinstance(command_at(path), click.Group))]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("group", GROUPS, ids=lambda path: " ".join(path) or "stevedore-server")
def test_every_summary_ends_where_a_sentence_ends(group: tuple[str, ...], width: int) -> None:
    summaries = rows(sections(help_of(*group, width=width))["Commands"])
    assert summaries
    for name, summary in summaries.items():
        assert not summary.endswith("...") and summary.endswith("."), (group, name, summary)


@pytest.mark.parametrize("path", list(command_paths(main)), ids=" ".join)
def test_every_command_and_subcommand_has_help(path: tuple[str, ...]) -> None:
    text = help_of(*path)
    assert text.startswith(f"Usage: stevedore-server {' '.join(path)}")


def test_the_description_names_both_protocols() -> None:
    description = help_of().split("Options:")[0]
    assert "HTTP" in description and "gRPC" in description


def test_every_run_option_is_in_exactly_one_section() -> None:
    named = [name for names in SECTIONS.values() for name in names]
    assert sorted(named) == sorted(RUN_SETTINGS)  # each once, and none missing
    kserve = [option[0] for option in KSERVE_OPTIONS]
    assert RUN_SECTIONS == SECTIONS | {"KServe's arguments": tuple(kserve)}


def flag_of(name: str) -> str:
    """The flag of ``run``'s parameter ``name``: a setting's, or one of KServe's arguments."""
    kserve = {parameter: flag for parameter, flag, _, _ in KSERVE_OPTIONS}
    return kserve.get(name, "--" + name.replace("_", "-"))


def test_run_help_shows_every_option_under_its_section() -> None:
    found = sections(help_of("run", width=200))
    assert [title for title in found if title in RUN_TITLES] == RUN_TITLES
    terms = {title: rows(found[title], options=True) for title in RUN_TITLES}
    flags = [flag for names in terms.values() for term in names for flag in re.findall(r"--[\w-]+", term)]
    for title, names in RUN_SECTIONS.items():
        for name in names:
            flag = flag_of(name)
            assert any(term.split()[0].startswith(flag) for term in terms[title]), (title, flag)
            assert flags.count(flag) == 1, flag
    assert list(terms["Other options"]) == ["-h, --help"]


@functools.cache
def option_help(name: str) -> str:
    """The help text of ``run``'s option of setting ``name``, on one line."""
    found = sections(help_of("run", width=200))
    flag = "--" + name.replace("_", "-")
    for lines in found.values():
        for term, text in rows(lines, options=True).items():
            if term.split()[0] in (flag, f"{flag}/"):
                return text
    raise AssertionError(f"{flag} not in run --help")


def test_defaults_are_shown_as_a_user_writes_them() -> None:
    text = help_of("run", width=200)
    assert "('all',)" not in text and "default: none" not in text.replace("(`*` for any; default: none)", "")
    assert "default: all;" in option_help("load_models")
    assert "default: 60]" in option_help("timeout") and "default: 604800]" in option_help("job_retention")
    assert "default: true]" in option_help("access_log") and "default: false]" in option_help("strict")
    assert "default: 0.001]" in option_help("inline_budget")
    for name in RUN_SETTINGS:  # one default a help: the setting's own words or the note's, never both
        assert option_help(name).lower().count("default:") <= 1, name
    plugins = option_help("plugins")
    assert plugins.count("default") == 1 and "(default: all)" in plugins


def test_the_examples_are_commands_run_takes() -> None:
    epilog = help_of("run").split("\nExamples:\n")[1]
    commands = [line.split()[1:] for line in epilog.splitlines() if line.strip().startswith("stevedore-server ")]
    assert 3 <= len(commands) <= 5 and all(command[0] == "run" for command in commands)
    for command in commands:
        run.make_context("run", command[1:])  # a flag run does not have fails here
    assert any("--model" in command for command in commands) and any("--mlserver" in command for command in commands)
    assert any("--config" in command for command in commands) and any("--workers" in command for command in commands)


def test_every_way_to_give_api_keys_is_in_run_help() -> None:
    security = " ".join(line.strip() for line in sections(help_of("run", width=200))["Security"])
    assert "STEVEDORE_API_KEYS" in security and "api_keys = [" in security and "--api-key-file" in security
    assert "--api-keys" not in help_of("run")


@pytest.mark.parametrize(("flag", "value"), [("--log-level", "loud"), ("--log-format", "xml"), ("--log-level", "INFO")])
def test_enumerated_options_are_choices(flag: str, value: str) -> None:
    result = CliRunner().invoke(main, ["run", flag, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}': '{value}' is not one of" in result.output


def test_the_choices_are_what_the_settings_take() -> None:
    """The flag takes what the variable takes: each choice is a valid setting, another is not."""
    for name, values in CHOICES.items():
        variable = "STEVEDORE_" + name.upper()
        for value in values:
            assert getattr(Settings.load({variable: value}), name) == value
        with pytest.raises(StartupError):
            Settings.load({variable: values[0].upper()})
    assert "--log-level [critical|error|warning|info|debug|trace]" in help_of("run", width=200)


def test_the_job_state_filter_is_a_choice() -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--state", "done"])
    assert result.exit_code == 2 and "'done' is not one of 'queued', 'running'," in result.output


# -- the real command ---------------------------------------------------------------------------------------------

#: Every installed distribution with models or runtimes: disabled, the server serves nothing.
EVERY_PLUGIN = sorted(
    {
        point.dist.name
        for group in ("stevedore.predictors", "stevedore.runtimes")
        for point in importlib.metadata.entry_points(group=group)
        if point.dist
    }
)
#: The variables that choose a port, which the commands below must not inherit from the developer's shell.
PORT_VARIABLES = ("PORT", "MLSERVER_HTTP_PORT")
THIS_ENVIRONMENT = Venv(Path(sys.prefix), ())


def command(*args: str, **env: str) -> tuple[int, str]:
    """The real ``stevedore-server`` of this environment; its exit code and everything it printed."""
    clean = {key: value for key, value in THIS_ENVIRONMENT.env().items() if key not in PORT_VARIABLES}
    result = run_command([THIS_ENVIRONMENT.bin / "stevedore-server", *args], env=clean | env, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server with every plugin disabled: no models, no jobs."""
    root = tmp_path_factory.mktemp("empty-server")
    disabled = ",".join(EVERY_PLUGIN)
    server = Server.start(
        THIS_ENVIRONMENT, root / "server.log", "--disable-plugins", disabled, "--state-dir", str(root)
    )
    try:
        server.wait_for("/livez")
        yield server
    finally:
        server.stop()


def port_of(server: Server) -> str:
    return server.url.rsplit(":", 1)[1]


@pytest.mark.server
def test_models_follow_stevedore_port_and_say_when_there_are_none(empty_server: Server) -> None:
    code, output = command("models", "index", STEVEDORE_PORT=port_of(empty_server))
    assert (code, output) == (0, "no models\n")
    code, output = command("models", "index", "--ready", STEVEDORE_PORT=port_of(empty_server))
    assert (code, output) == (0, "no ready models\n")
    assert command("models", "index", "--url", empty_server.url) == (0, "no models\n")


@pytest.mark.server
def test_jobs_follow_port_and_say_when_there_are_none(empty_server: Server) -> None:
    code, output = command("jobs", "list", PORT=port_of(empty_server))
    assert (code, output) == (0, "no jobs\n")
    assert command("jobs", "list", "--url", empty_server.url) == (0, "no jobs\n")
    code, output = command("jobs", "list", "--state", "running", "--model", "iris", PORT=port_of(empty_server))
    assert (code, output) == (0, "no jobs of model iris in state running\n")


@pytest.mark.server
def test_stevedore_port_comes_before_port(empty_server: Server) -> None:
    closed = str(free_port())
    code, output = command("jobs", "list", STEVEDORE_PORT=port_of(empty_server), PORT=closed)
    assert (code, output) == (0, "no jobs\n")
    code, output = command("jobs", "list", STEVEDORE_PORT=closed, PORT=port_of(empty_server))
    assert code == 1 and f"cannot reach http://127.0.0.1:{closed}" in output
    code, output = command("models", "index", STEVEDORE_PORT="eighty")
    assert code == 2 and "STEVEDORE_PORT" in output and "'eighty'" in output


def test_list_says_when_there_are_no_models() -> None:
    code, output = command("list", "--disable-plugins", ",".join(EVERY_PLUGIN))
    assert (code, output) == (0, "no models\n")


def test_make_run_takes_the_grpc_port() -> None:
    """``make run`` as ``make run PORT=... GRPC_PORT=...`` (dry run: the command it would run)."""
    repo = Path(__file__).resolve().parent.parent
    ports = run_command(["make", "-n", "-C", str(repo), "run", "PORT=9000", "GRPC_PORT=9001"]).stdout
    assert "stevedore-server run --host 127.0.0.1 --port 9000 --grpc-port 9001" in ports
    default = run_command(["make", "-n", "-C", str(repo), "run"]).stdout
    assert "--port 8000 --grpc-port 8081" in default
