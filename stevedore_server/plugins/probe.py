"""Reading a model file first in a child process, for runtimes whose library parses it natively
(``FilePredictor.read_aside_first``): a damaged or crafted XGBoost, LightGBM or ONNX file can crash the process
that reads it (a segmentation fault) or make it loop, and that must fail its model, not the server.

The child reads the file and predicts on the fixture, as loading will; the server then reads it itself. A
Python exception in the child is left for the server's own reading to raise (with its usual reason); a child
killed by a signal, or still reading after ``PROBE_TIMEOUT`` seconds, fails the model with that reason.

    python -m stevedore_server.plugins.model_files < spec.json    # the child (``model_files.read_here``)
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import orjson

from stevedore_server.base.errors import PluginError
from stevedore_server.model_files import ModelFile

logger = logging.getLogger("stevedore.model_files")

#: Seconds the child may take to read the file and predict on its fixture.
PROBE_TIMEOUT = 300.0


def read_aside(spec: ModelFile, timeout: float = PROBE_TIMEOUT) -> None:
    """Read ``spec``'s file in a child process first: PluginError if that crashes or hangs it."""
    command = [sys.executable, "-m", "stevedore_server.plugins.model_files"]
    try:
        done = subprocess.run(command, input=orjson.dumps(spec.as_json()), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(
            f"reading {spec.shown} did not end within {timeout:g} s in a process of its own: a damaged file can make "
            f"its library loop"
        ) from None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise PluginError(
            f"reading {spec.shown} killed the process that read it ({name}): the file is damaged, or not what the "
            f"{spec.runtime} runtime reads"
        )
    if done.returncode != 0:
        logger.debug("model %s: reading it aside failed: %s", spec.name, done.stderr.decode(errors="replace"))
