"""Where the process is in its life: serving, or draining after SIGTERM.

The app's lifespan puts one ``Lifecycle`` in the app state (``"lifecycle"``);
the process entry point (``process.DrainingServer``) marks it draining on
SIGTERM, which turns readiness to 503 at once and makes every answer carry
``Connection: close`` so that keep-alive clients reconnect elsewhere.
"""

from __future__ import annotations


class Lifecycle:
    def __init__(self) -> None:
        self.draining = False

    def drain(self) -> None:
        self.draining = True
