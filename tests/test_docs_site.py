"""The documentation site, built for real (``mkdocs build --strict``, as ``make docs`` and ``make test`` build it):
every page in its navigation, nothing loaded from another host, and its reference pages generated from the code
(every setting, command and flag, the Predictor and the hooks); and the README short, leading into the site."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from stevedore_server import hookspecs
from stevedore_server.base.settings import Settings, reference
from stevedore_server.base.settings.model import env_name
from stevedore_server.cli import main

from .documentation import DOCS, README, REPO, between, page, page_names

#: Addresses the theme's script names but never fetches on this site, each with the reason it stays dormant; the
#: tests below hold the site to those reasons.
DORMANT_SCRIPT_URLS = {
    # Loaded only for a page with a Mermaid diagram: no page has one (checked).
    "https://unpkg.com/mermaid@11/dist/mermaid.min.js",
    # Loaded only by a browser without ResizeObserver (none since 2020).
    "https://unpkg.com/resize-observer-polyfill",
    # The repository's stars and forks, fetched only with `repo_url` set: the site has no source link (checked).
    "https://api.github.com/repos/${e}/${t}",
    "https://api.github.com/users/${e}",
    "https://${e}/api/v4/projects/${encodeURIComponent(t)}",
}
#: The attributes through which a page loads something (not the links a reader follows: `<a href>`).
LOADING_ATTRIBUTES = {"script": "src", "img": "src", "iframe": "src", "source": "src", "embed": "src", "object": "data"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built by ``mkdocs build --strict`` from the repository's mkdocs.yml (any warning fails it)."""
    directory = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return directory


def nav_pages(entries: list[Any]) -> Iterator[str]:
    """The pages of mkdocs.yml's ``nav``, sections flattened."""
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield value


def test_every_page_is_in_the_navigation_and_built(site: Path) -> None:
    nav = list(nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))
    assert sorted(nav) == page_names(), "every page of docs/ in mkdocs.yml's nav, once"
    assert len(nav) == len(set(nav))
    for name in nav:
        assert (site / name).with_suffix(".html").is_file(), name


class Loads(HTMLParser):
    """What an HTML page loads: scripts, stylesheets, icons, fonts, images, frames, and its inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self.classes: set[str] = set()
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.classes.update(values.get("class", "").split())
        if tag == "link" and values.get("rel", "") != "canonical":
            self.urls.append(values.get("href", ""))  # stylesheets, icons, fonts, preloads, manifests
        elif tag in LOADING_ATTRIBUTES:
            self.urls.append(values.get(LOADING_ATTRIBUTES[tag], ""))
        self.styles.append(values.get("style", ""))
        self.in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_style:
            self.styles.append(data)


def remote(url: str) -> bool:
    """Whether a page or stylesheet fetching ``url`` would go to another host."""
    return bool(re.match(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", url, flags=re.I)) and not url.strip().startswith("data:")


def css_loads(css: str) -> list[str]:
    """The addresses a stylesheet loads: its ``@import`` and ``url(...)`` values, ``data:`` ones excepted."""
    imports = re.findall(r"@import\s+(?:url\()?\s*['\"]?([^'\")\s;]+)", css)
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    return [url for url in imports + urls if not url.strip().startswith("data:")]


def test_nothing_is_loaded_from_another_host(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(page_names())
    for path in pages:
        loads = Loads()
        loads.feed(path.read_text())
        assert not [url for url in loads.urls if remote(url)], path
        assert not [url for style in loads.styles for url in css_loads(style) if remote(url)], path
        assert "mermaid" not in loads.classes, f"{path}: a Mermaid diagram would load Mermaid from unpkg.com"
        assert "md-source" not in loads.classes, f"{path}: a source link would ask the forge's API for its facts"
    for path in site.rglob("*.css"):
        assert not [url for url in css_loads(path.read_text()) if remote(url)], path
    for path in site.rglob("*.js"):
        literals = re.findall(r"([\"'`])((?:https?:)?//[^\"'`\s]+)\1", path.read_text())
        assert {url for _, url in literals} <= DORMANT_SCRIPT_URLS, path
    assert "fonts.googleapis.com" not in "".join(p.read_text() for p in pages), "theme font: false"


def text_of(html_page: str) -> str:
    """A built page's text: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_page))


def test_the_settings_reference_page_is_the_settings_object(site: Path) -> None:
    assert between("settings-reference", page("reference/settings.md")) == reference()
    built = (site / "reference" / "settings.html").read_text()
    settings = [item for item in dataclasses.fields(Settings) if not item.metadata["file_only"]]
    assert len(settings) > 30
    for item in settings:
        flag = f"<code>--{item.name.replace('_', '-')}</code>" if item.metadata["flag"] else ""
        row = rf"<td><code>{item.name}</code></td>\s*<td>{flag}</td>\s*<td><code>{env_name(item.name)}</code></td>"
        assert re.search(row, built), f"{item.name}: no row of the built settings table"


def commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the click group, subcommands included, with its path of names."""
    yield path, group
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name))


def sections(built: str) -> dict[str, str]:
    """The commands page's text by heading id: each command's section, up to the next heading."""
    parts = re.split(r'<h[1-6] id="([^"]+)"', built)
    return {parts[n]: text_of(parts[n + 1]) for n in range(1, len(parts) - 1, 2)}


def test_the_commands_reference_lists_every_command_and_flag(site: Path) -> None:
    by_id = sections((site / "reference" / "commands.html").read_text())
    listed = list(commands(main))
    assert len(listed) > 12
    for path, command in listed:
        if command.hidden:
            continue
        section = by_id["-".join(("stevedore-server", *path))]
        assert f"stevedore-server {' '.join(path)}".strip() in section
        for parameter in command.params:
            if isinstance(parameter, click.Option) and not parameter.hidden:
                for flag in (*parameter.opts, *parameter.secondary_opts):
                    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section), (path, flag)


def test_the_api_reference_renders_the_predictor_and_every_hook(site: Path) -> None:
    built = text_of((site / "reference" / "api.html").read_text())
    hooks = [name for name, value in vars(hookspecs).items() if hasattr(value, "stevedore_spec")]
    assert hooks and all(hook in built for hook in hooks)
    for name in ("Predictor", "run_predict", "convert_prediction_input", "predict_stream", "FilePredictor", "derive"):
        assert name in built, name


def test_the_readme_is_short_and_leads_into_every_page() -> None:
    assert len(README.splitlines()) <= 250
    linked = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", README)
    assert {link.removeprefix("docs/") for link in linked} == set(page_names()) - {"index.md"}
    assert all((REPO / link).is_file() for link in linked)
    for local in re.findall(r"\]\(([A-Z]+\.md)\)", README):
        assert (REPO / local).is_file(), local
    assert (DOCS / "index.md").is_file()
