"""``[traffic.NAME]`` tables read from the settings file: a table of the wrong shape stops the real command with one
line naming ``traffic.NAME...`` and the file; a good one is kept normalised (what a Ray Serve config carries);
answers compared for a shadow within the table's tolerance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stevedore_server.base.errors import SettingError
from stevedore_server.base.settings import Settings
from stevedore_server.base.settings.model import read_document
from stevedore_server.core.traffic import same

COMMAND = str(Path(sys.prefix) / "bin" / "stevedore-server")


@pytest.mark.parametrize(
    ("table", "named", "problem"),
    [
        ('split = [{ model = "wine:1", weight = 1 }]\nshadows = "wine:2"', "traffic.wines.shadows", "no such key"),
        ('sticky = "header:X-User"', "traffic.wines.split", "missing"),
        ("split = []", "traffic.wines.split", "non-empty list"),
        ('split = [{ model = "wine:1", weight = -5 }]', "traffic.wines.split[0].weight", "zero or more"),
        ('split = [{ model = "wine:1", weight = "90" }]', "traffic.wines.split[0].weight", "a number"),
        ('split = [{ model = "wine:1", weight = 0 }]', "traffic.wines.split", "above zero"),
        ('split = [{ model = "wine:", weight = 1 }]', "traffic.wines.split[0].model", "NAME:VERSION"),
        ('split = [{ model = "wine", weight = 1, extra = 2 }]', "traffic.wines.split[0]", "model ="),
        ('split = [{ model = "a", weight = 1 }, { model = "a", weight = 2 }]', "traffic.wines.split", "twice"),
        ('split = [{ model = "a", weight = 1 }]\nsticky = "cookie:id"', "traffic.wines.sticky", "header:NAME"),
        ('split = [{ model = "a", weight = 1 }]\nsticky = "pointer:0"', "traffic.wines.sticky", "starts with '/'"),
        ('split = [{ model = "a", weight = 1 }]\ntolerance = -1', "traffic.wines.tolerance", "zero or more"),
        ('split = [{ model = "a", weight = 1 }]\nshadow = 3', "traffic.wines.shadow", "NAME:VERSION"),
        ('split = [{ model = "a", weight = 1 }]\nshadow_share = 0', "traffic.wines.shadow_share", "above 0"),
        ('split = [{ model = "a", weight = 1 }]\nshadow_share = 1.5', "traffic.wines.shadow_share", "at most 1"),
        # An int too long for a float (TOML reads any) was an OverflowError's traceback; a sum past a float: inf.
        (f'split = [{{ model = "a", weight = 1{"0" * 400} }}]', "traffic.wines.split[0].weight", "finite"),
        ('split = [{ model = "a", weight = inf }]', "traffic.wines.split[0].weight", "finite"),
        ('split = [{ model = "a", weight = 1e308 }, { model = "b", weight = 1e308 }]', "traffic.wines.split", "sum"),
    ],
)
def test_a_wrong_table_is_named_with_its_file(tmp_path: Path, table: str, named: str, problem: str) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text(f"[traffic.wines]\n{table}\n")
    with pytest.raises(SettingError) as raised:
        Settings.load({}, config=str(config))
    message = str(raised.value)
    assert message.startswith(f"setting {named} (in {config}, table [traffic.wines])"), message
    assert problem in message


def test_the_command_stops_on_a_wrong_table(tmp_path: Path) -> None:
    config = tmp_path / "stevedore.toml"
    config.write_text('[traffic.wines]\nsplit = [{ model = "wine:1", weight = -5 }]\n')
    environ = {key: value for key, value in os.environ.items() if not key.startswith("STEVEDORE_")}
    command = [COMMAND, "check", "--config", str(config), "--plugins", "stevedore-sklearn-logreg"]
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "setting traffic.wines.split[0].weight" in result.stderr.strip().splitlines()[-1]


def test_a_good_table_is_kept_normalised_and_reads_back() -> None:
    table = {
        "split": [{"model": "wine:1.0.0", "weight": 90}, {"model": "wine:2.0.0", "weight": 10}],
        "sticky": "header:X-User",
        "shadow": "wine:2.0.0",
        "tolerance": 1e-6,
    }
    read = read_document({"traffic": {"wines": table}}, "a test")["traffic"]
    assert read == {
        "wines": {
            "split": [{"model": "wine:1.0.0", "weight": 90.0}, {"model": "wine:2.0.0", "weight": 10.0}],
            "sticky": "header:x-user",
            "shadow": "wine:2.0.0",
            "tolerance": {"rel": 1e-6, "abs": 1e-6},
        }
    }
    assert read_document({"traffic": read}, "a test")["traffic"] == read
    assert Settings(traffic=read).document()["traffic"] == read


def test_answers_compare_within_the_tolerance() -> None:
    assert same([1.0, 2.0], np.array([1.0, 2.0]))
    assert not same([1.0, 2.0], [1.0, 2.0000001])
    assert same([1.0, 2.0], [1.0, 2.0000001], rel=1e-6)
    assert same({"p": [[0.1, 0.9]]}, {"p": np.array([[0.1 + 1e-12, 0.9]])}, absolute=1e-9)
    assert not same({"p": [1]}, {"q": [1]})
    assert not same([1, 2], [1, 2, 3])
    assert same(["a", float("nan")], ["a", float("nan")])
    assert not same(["a"], ["b"])
