"""The documentation a user reads, README.md and the site's pages (docs/), as text for the tests that run its
examples: the one place that knows where a section lives, so a section can move between pages without its tests.

Pages include files with pymdownx.snippets (``--8<-- "contrib/showcase/..."``, paths from the repository's root, as
``mkdocs.yml`` sets ``base_path``); the text here has those lines replaced by the files, as the site shows them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text()

#: A snippet line: ``--8<-- "path"``, alone on its line (indented or not).
SNIPPET = re.compile(r'^([ \t]*)--8<--[ \t]+"([^"]+)"[ \t]*$', flags=re.M)


def expand_snippets(text: str) -> str:
    """``text`` with each snippet line replaced by its file, or by a section of it (``"path:name"``: the lines
    between those holding ``[start:name]`` and ``[end:name]``), indented as the line. A missing file or section
    leaves the line as it is, which the site's strict build reports."""

    def included(match: re.Match[str]) -> str:
        indent, target = match.groups()
        path, _, section = target.partition(":")
        source = REPO / path
        if not source.is_file():
            return match[0]
        lines = source.read_text().rstrip("\n").splitlines()
        if section:
            starts = [n for n, line in enumerate(lines) if f"[start:{section}]" in line]
            ends = [n for n, line in enumerate(lines) if f"[end:{section}]" in line]
            if not (starts and ends):
                return match[0]
            lines = lines[starts[0] + 1 : ends[0]]
        return "\n".join(indent + line if line else line for line in lines)

    return SNIPPET.sub(included, text)


def page_names() -> list[str]:
    """Every page of the site, as its path under docs/ (``protocols/v2-rest.md``)."""
    return sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))


def page(name: str) -> str:
    """The page ``name`` (its path under docs/), snippets included."""
    return expand_snippets((DOCS / name).read_text())


#: The README and every page, one after the other: for what must be documented somewhere.
ALL_TEXT = "\n".join([README, *(page(name) for name in page_names())])


def blocks(language: str, text: str = ALL_TEXT) -> list[str]:
    """The fenced code blocks of ``language`` (```` ```python ````) in ``text``, without their fences."""
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def block(language: str, containing: str, text: str = ALL_TEXT) -> str:
    """The one block of ``language`` in ``text`` containing ``containing`` (a test fails when there are several)."""
    (found,) = [code for code in blocks(language, text) if containing in code]
    return found


def between(marker: str, text: str = ALL_TEXT) -> str:
    """What ``text`` holds between ``<!-- marker ... -->`` and ``<!-- /marker -->``, from the line after the
    opening comment."""
    start = text.index(f"<!-- {marker}")
    return text[text.index("\n", start) + 1 : text.index(f"<!-- /{marker} -->")]


#: A fenced block: its fence (indented or not, any language or none), its code, the closing fence.
FENCE = re.compile(r"^([ \t]*)```([\w-]*)[^\n]*\n(.*?)^\1```[ \t]*$", flags=re.M | re.S)
#: What marks the block after it as not run by any test, and why: ``<!-- not run: needs a Kubernetes cluster -->``
#: on the line just before its fence.
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->[ \t]*\n[ \t]*\Z")


@dataclass(frozen=True)
class Fenced:
    """A fenced block of a page as the site shows it (snippets included)."""

    page: str  #: ``README.md`` or the path under docs/
    line: int  #: of its opening fence, in the page with its snippets included
    language: str
    code: str
    not_run: str  #: why no test runs it, from the comment before it; empty when a test must

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.language or 'no language'})"

    def __contains__(self, example: tuple[str, str]) -> bool:
        """Whether this is the block ``(page, containing)`` names: on that page, holding that text."""
        name, containing = example
        return self.page == name and containing in self.code


def fenced(name: str, text: str) -> list[Fenced]:
    """Every fenced block of the page ``name`` whose text (snippets included) is ``text``."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        marked = NOT_RUN.search(before)
        found.append(Fenced(name, before.count("\n") + 1, match[2], match[3], marked[1] if marked else ""))
    return found
