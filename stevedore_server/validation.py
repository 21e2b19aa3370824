"""Deprecated path: ``stevedore_server.validation`` is now ``stevedore_server.base.validation``.

Plugins (and their tests) that import the old path keep working, with a warning.
"""

from stevedore_server.base.moved import redirect

redirect(__name__, "stevedore_server.base.validation")
