"""The port the commands that talk to a running server (``models``, ``jobs``) default to is the one ``run`` would
listen on: one function of the settings layer (``environment_port``) gives both the order of the variables."""

from __future__ import annotations

import itertools

import pytest

from stevedore_server.base.errors import SettingError
from stevedore_server.base.settings import Settings, environment_port

VARIABLES = {"STEVEDORE_PORT": "7001", "PORT": "7002", "MLSERVER_HTTP_PORT": "7003"}
SUBSETS = [
    dict(combination)
    for size in range(len(VARIABLES) + 1)
    for combination in itertools.combinations(VARIABLES.items(), size)
]


@pytest.mark.parametrize("environ", SUBSETS, ids=lambda environ: "+".join(environ) or "none")
def test_the_commands_port_is_the_one_run_listens_on(environ: dict[str, str]) -> None:
    assert environment_port(environ) == Settings.load(environ).port


def test_an_empty_variable_is_unset_and_a_wrong_one_is_named() -> None:
    assert environment_port({"STEVEDORE_PORT": " ", "PORT": "7002"}) == 7002
    with pytest.raises(SettingError, match=r"setting port \(PORT\): 'eighty' is not an integer"):
        environment_port({"PORT": "eighty", "MLSERVER_HTTP_PORT": "7003"})
