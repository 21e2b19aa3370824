"""Settings from the environment, and plugin selection."""

from __future__ import annotations

import re

import pytest

from stevedore_server.errors import StartupError
from stevedore_server.plugins import PluginSelection, PluginSource
from stevedore_server.settings import Settings


def test_from_env_and_back() -> None:
    env = {"STEVEDORE_PORT": "9000", "STEVEDORE_STRICT": "yes", "STEVEDORE_DISABLE_PLUGINS": "a, b_c ,"}
    settings = Settings.from_env(env)
    assert (settings.port, settings.strict) == (9000, True)
    assert (settings.disable_plugins, settings.plugins) == (("a", "b_c"), None)
    assert Settings.from_env(settings.to_env()) == settings


def test_a_flag_beats_its_variable() -> None:
    assert Settings.from_env({"STEVEDORE_PORT": "9000"}, port=9100).port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STEVEDORE_PORT": "x"}, "setting port (STEVEDORE_PORT): 'x' is not an integer"),
        ({"STEVEDORE_STRICT": "maybe"}, "setting strict (STEVEDORE_STRICT): 'maybe' is not a boolean"),
        ({"STEVEDORE_LOG_LEVEL": "loud"}, "setting log_level: 'loud' is not one of"),
        ({"STEVEDORE_PORT": "70000"}, "setting port: 70000 is not a TCP port"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(StartupError, match=re.escape(message)):
        Settings.from_env(env)


def source(entry_point: str, distribution: str | None) -> PluginSource:
    return PluginSource(entry_point=entry_point, distribution=distribution)


def test_selection_matches_entry_point_or_distribution_names() -> None:
    only = PluginSelection.from_names(["Stevedore_SKLearn.LogReg"])
    assert only.allows(source("iris", "stevedore-sklearn-logreg"))
    assert not only.allows(source("other", "other-dist"))
    disabled = PluginSelection.from_names(None, ["iris"])
    assert not disabled.allows(source("iris", "stevedore-sklearn-logreg"))
    assert disabled.allows(source("other", None))
    assert PluginSelection.from_names([]).allows(source("anything", None))  # empty means all
