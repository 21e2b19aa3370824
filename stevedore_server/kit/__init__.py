"""The plugin author's kit: what ``stevedore-server check``, ``new-plugin`` and the pytest plugin run.

- ``checking``: what ``check`` does and says, one model at a time;
- ``loopback``: servers on a loopback port for the fixtures (a real
  ``stevedore-server run`` process, or the app on a thread);
- ``scaffold``: ``new-plugin``'s package;
- ``runtime_testing``: for a runtime's tests, its model files served and asked over
  loopback (``runtime_servers``, ``predict``, ``infer``, ``failure_reason``) or
  handed to it in process (``model_file``).

The public faces stay at the top of the package: ``stevedore_server.testing``
(``self_test``) and ``stevedore_server.pytest_plugin`` (the ``pytest11`` entry
point). May import every layer below the commands.
"""
