"""Deprecated path: ``stevedore_server.discovery`` is now ``stevedore_server.plugins.discovery``.

Plugins (and their tests) that import the old path keep working, with a warning.
"""

from stevedore_server.base.moved import redirect

redirect(__name__, "stevedore_server.plugins.discovery")
