"""The web console at ``/``: every model's health, a page per model, and a form to try each one.

``routes`` are added to the app when the ``console`` setting is on; ``PAGES``
are its paths that hold no data, open when API keys are on. Its pages are
rendered by ``pages`` (Jinja2 templates in ``templates/``), its try-it forms
planned by ``forms``; ``static/`` holds its script and styles and, in
``static/vendor/``, htmx and Pico CSS with their licences.
"""

from __future__ import annotations

from .routes import PAGES, routes

__all__ = ["PAGES", "routes"]
