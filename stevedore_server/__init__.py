"""stevedore-server: a plugin-based model server.

What a plugin imports from here: ``Predictor`` (the contract a model
implements) and ``hookimpl`` (the marker of hook implementations), with
``hookspecs``, ``testing`` and the pytest plugin beside them. The server
itself is in the layers below, each a subpackage whose docstring says what it
owns: ``base``, ``plugins``, ``processes``, ``core``, ``jobs``,
``frontends``, and on top ``kit``, ``deploy``, ``process``, ``rayserve`` and
``cli`` (the README's "Layout" is the map).
"""

from __future__ import annotations

from stevedore_server.base.version import __version__

from .hookspecs import hookimpl
from .predictor import Generation, Predictor

__all__ = ["Generation", "Predictor", "__version__", "hookimpl"]
