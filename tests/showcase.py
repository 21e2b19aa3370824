"""The example plugin ``contrib/showcase`` (whose modules the documentation shows), for the tests of the protocols
it illustrates: its modules imported from their files, as the plugin is not installed in the tests' environment
(its own tests, in ``contrib/showcase/tests``, serve its installed wheel)."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

from .venvs import REPO

SHOWCASE = REPO / "contrib" / "showcase"
PACKAGE = SHOWCASE / "stevedore_showcase"


def showcase_module(name: str) -> ModuleType:
    """``stevedore_showcase/NAME.py``, imported under a name of its own (its package data found beside it)."""
    qualified = f"showcase_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, PACKAGE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no module {name} in {PACKAGE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # the predictors find their package data through it
    spec.loader.exec_module(module)
    return module


def readme_block(section: str) -> str:
    """The ``sh`` block of the showcase README's section ``section`` (as the pages include it)."""
    readme = (SHOWCASE / "README.md").read_text()
    pattern = rf"<!-- --8<-- \[start:{re.escape(section)}\] -->\n```sh\n(.*?)```\n<!-- --8<-- \[end:"
    (block,) = re.findall(pattern, readme, flags=re.DOTALL)
    return str(block)
