"""The package's modules and what each imports, read from the source (nothing is imported): every import
counts, those under ``TYPE_CHECKING`` and inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import stevedore_server

PACKAGE = Path(stevedore_server.__file__).parent


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_by(name: str, path: Path, known: set[str], packages: bool) -> set[str]:
    """The package's modules the module ``name`` imports: each imported module and the module of each imported
    name; with ``packages``, also the ``__init__`` of every package on their way (Python runs them), the root's
    aside (every module would import it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from package import module`` runs the package's ``__init__`` too (and the shared import-cycle tool
            # counts it so): the root's aside, which every module would import.
            targets = {f"{base}.{alias.name}" for alias in node.names}
            if base != PACKAGE.name or not targets <= known:  # the root's own names (``__version__``) count
                targets.add(base)
        elif isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:end]) for end in range(2 if packages else len(parts), len(parts) + 1)}
    return {module for module in found if module in known and module != name}


def graph(packages: bool = False) -> dict[str, set[str]]:
    known = modules()
    return {name: imported_by(name, path, set(known), packages) for name, path in known.items()}
