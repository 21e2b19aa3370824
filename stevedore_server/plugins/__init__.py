"""The plugins layer: finding what the installed plugins provide and loading it, and calling their hooks.

The contract itself is public and stays at the top of the package
(``stevedore_server.predictor``: the ``Predictor``; ``stevedore_server.hookspecs``:
the hooks). Here:

- ``manager``: the plugin manager (the hook specifications, the built-in
  plugins of ``builtin/``, the ``stevedore.hooks`` entry points);
- ``hooks``: the one typed facade the server calls hooks through;
- ``host``: what a hook is handed as ``server`` (protocols the core's server
  fulfils);
- ``discovery``: the predictors of the ``stevedore.predictors`` entry points
  and of the registration hook, their names checked; the pipelines of the
  ``stevedore.pipelines`` entry points;
- ``installed``: the installed plugins' entry points, and a selection checked
  against them;
- ``site_packages``: what was installed since the process started (new ``.pth``
  files read);
- ``loading``: one model loaded and self-tested into an immutable
  ``LoadedModel``; ``capabilities``: its text capabilities (chat, complete,
  embed) checked and self-tested, and the shapes of what they give;
- ``routes``: the plugins' own HTTP routes as registered (served by
  ``frontends.web.plugin_routes``).

May import: ``base`` (and the contract modules at the top). A model's worker
process imports this layer to load its model, so nothing here needs Starlette.
"""
