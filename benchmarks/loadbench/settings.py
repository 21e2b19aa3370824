"""The benchmark's settings, read once from the environment (``make bench`` passes it through)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent

DEFAULT_TARGETS = (
    "floor",
    "mlserver",
    "kserve",
    "ours-stevedore",
    "ours-v2",
    "ours-v2-binary",
    "ours-workers2",
    "mlserver-grpc",
    "kserve-grpc",
    "ours-grpc",
    "ours-threads",
    "ours-processes",
    "ours-gil-threads",
    "ours-gil-processes2",
    "ours-runtime",
    "ours-mlserver",
)
DEFAULT_SCENARIOS = ("small-c1", "small-c32", "batch1000-c4", "small-c64-batching")


class SettingError(Exception):
    """A setting with a value the benchmark cannot use."""


@dataclass(frozen=True)
class BenchSettings:
    #: Rounds over all targets; the table shows the median of the rounds.
    rounds: int = 3
    #: Seconds of measured load per scenario.
    duration: float = 10.0
    #: Seconds of the same load, not measured, before each scenario.
    warmup: float = 2.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    #: Each run writes to a new directory here.
    out: Path = BENCH_DIR / "results"
    #: The targets' virtual environments, kept between runs.
    venvs: Path = BENCH_DIR / ".venvs"
    #: The Python the virtual environments are made from.
    python: str = sys.executable
    startup_timeout: float = 180.0
    #: Seconds from SIGTERM to SIGKILL when a server is stopped.
    stop_grace: float = 10.0
    #: Seconds between two RSS samples of a server's process tree.
    sample_interval: float = 0.2
    #: Run the soak instead of the comparison.
    soak: bool = False
    soak_minutes: int = 5
    soak_target: str = "ours-stevedore"
    soak_connections: int = 32
    #: Run the benchmark of lazy models within a memory budget instead (loadbench/lazy.py).
    lazy: bool = False
    #: Run the benchmark of pipelines instead (loadbench/pipelines.py).
    pipelines: bool = False
    #: Run the benchmark of the OpenAI-compatible routes instead (loadbench/llm.py).
    llm: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BenchSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            raw = environ.get(item.name.upper())
            if raw not in (None, ""):
                values[item.name] = parse(item.name, item.type, raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.rounds < 1 or self.duration <= 0 or self.warmup < 0 or self.soak_minutes < 1:
            raise SettingError("ROUNDS and SOAK_MINUTES must be at least 1, DURATION positive, WARMUP not negative")
        unknown = sorted(set(self.scenarios) - set(DEFAULT_SCENARIOS))
        if unknown:
            raise SettingError(f"SCENARIOS: unknown {', '.join(unknown)}; known: {', '.join(DEFAULT_SCENARIOS)}")


def parse(name: str, annotation: object, raw: str) -> object:
    """One environment value as the type of its field; the error names the variable."""
    kind = str(annotation)
    try:
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw).resolve()
        if kind.startswith("tuple"):
            return tuple(part for part in raw.replace(",", " ").split() if part)
    except ValueError:
        raise SettingError(f"{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
