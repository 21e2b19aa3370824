"""Every wrong setting stops the real command with one line naming the setting, where its value came from (the
flag, the variable, the file and its table) and what it should be, in plain words ("an integer", never "a int")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMAND = str(Path(sys.prefix) / "bin" / "stevedore-server")
#: Variables of the machine running the tests that would change what the commands read.
CLEARED = ("PORT", "MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT")


def refused(*args: str, **env: str) -> str:
    """The command's error line: it must exit 2 (a usage error) before serving anything."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STEVEDORE_") and k not in CLEARED}
    command = [COMMAND, *args, "--plugins", "stevedore-sklearn-logreg"]
    result = subprocess.run(command, env=environ | env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and " a int" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_variable_is_named(command: str) -> None:
    assert refused(command, STEVEDORE_PORT="eighty") == (
        "Error: setting port (STEVEDORE_PORT): 'eighty' is not an integer"
    )
    assert refused(command, STEVEDORE_PORT="99999") == (
        "Error: setting port (STEVEDORE_PORT): 99999 is not a TCP port (0-65535)"
    )


def test_the_platform_port_is_named() -> None:
    assert refused("run", PORT="99999") == "Error: setting port (PORT): 99999 is not a TCP port (0-65535)"


def test_true_or_false_in_plain_words() -> None:
    assert refused("run", STEVEDORE_ACCESS_LOG="maybe") == (
        "Error: setting access_log (STEVEDORE_ACCESS_LOG): 'maybe' is not true or false "
        "(true/false, yes/no, on/off, 1/0)"
    )


def test_a_flag_is_named() -> None:
    assert refused("run", "--port", "99999") == "Error: setting port (--port): 99999 is not a TCP port (0-65535)"
    assert refused("run", "--port", "eighty").endswith("'--port': 'eighty' is not a valid integer.")


def test_a_default_is_named() -> None:
    """The HTTP port moved onto the gRPC port's default: the error says the other value is the default."""
    assert refused("run", "--port", "8081") == "Error: setting grpc_port (its default): 8081 is the HTTP port too"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "x"', "setting port (in {path}): 'x' is not an integer"),
        ("port = 99999", "setting port (in {path}): 99999 is not a TCP port (0-65535)"),
        ("timeout = true", "setting timeout (in {path}): True is not a number"),
        ('strict = "yes"', "setting strict (in {path}): 'yes' is not true or false"),
        ("plugins = 3", "setting plugins (in {path}): 3 is not a list of strings"),
        ("prot = 8000", "setting prot (in {path}): no such setting; did you mean 'port'?"),
        (
            '[models.iris]\nmax_queue = "x"',
            "setting models.iris.max_queue (in {path}, table [models.iris]): 'x' is not an integer",
        ),
        (
            "[models.iris]\nmax_queue = -1",
            "setting models.iris.max_queue (in {path}, table [models.iris]): -1 must not be negative",
        ),
        (
            "[models.iris]\nmax_qeue = 1",
            "setting models.iris.max_qeue (in {path}, table [models.iris]): no such per-model setting; "
            "did you mean 'max_queue'?",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_file_value_names_the_file_and_table(tmp_path: Path, command: str, text: str, message: str) -> None:
    path = tmp_path / "stevedore.toml"
    path.write_text(text + "\n")
    assert refused(command, "--config", str(path)) == "Error: " + message.format(path=path)


def test_the_variable_naming_the_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert refused("run", STEVEDORE_CONFIG=str(missing)) == (
        f"Error: setting config (STEVEDORE_CONFIG): cannot read {missing}: No such file or directory"
    )


def test_a_key_file_that_cannot_be_read_names_where_it_was_set(tmp_path: Path) -> None:
    """The key file is read by the front ends, after the settings loaded: its error still names its source."""
    missing = tmp_path / "keys"
    problem = f"cannot read {missing}: No such file or directory"
    assert refused("run", STEVEDORE_API_KEY_FILE=str(missing)) == (
        f"Error: setting api_key_file (STEVEDORE_API_KEY_FILE): {problem}"
    )
    config = tmp_path / "stevedore.toml"
    config.write_text(f'api_key_file = "{missing}"\n')
    assert refused("run", "--config", str(config)) == f"Error: setting api_key_file (in {config}): {problem}"


@pytest.mark.parametrize("command", ["run", "check"])
def test_an_mlserver_folder_error_names_where_it_was_set(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing"
    assert refused(command, "--mlserver", str(missing)) == (
        f"Error: setting mlserver (--mlserver): {missing} is not a folder"
    )
    (tmp_path / "iris").mkdir()
    broken = tmp_path / "iris" / "model-settings.json"
    broken.write_text('{"implementation": 3}')
    assert refused(command, STEVEDORE_MLSERVER=str(tmp_path)) == (
        f"Error: setting mlserver (STEVEDORE_MLSERVER): {broken}: implementation 3 is not a string"
    )
