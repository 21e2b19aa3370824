"""Deprecated path: ``stevedore_server.serialization`` is now ``stevedore_server.base.serialization``.

Plugins (and their tests) that import the old path keep working, with a warning.
"""

from stevedore_server.base.moved import redirect

redirect(__name__, "stevedore_server.base.serialization")
