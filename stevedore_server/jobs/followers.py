"""The clients following job logs (``GET /jobs/{id}/logs?follow=true``) in one server process, at most
``max_log_followers`` at once: each stream holds a place from its start to its end, however it ends (the job
done, the client gone); one more is refused, 429 with Retry-After, instead of a poller more on the store."""

from __future__ import annotations

import threading

from stevedore_server.base.errors import TooManyRequests


class LogFollowers:
    """The places of one server process's log followers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.lock = threading.Lock()

    def join(self) -> None:
        """Take a place; TooManyRequests when every one is taken."""
        with self.lock:
            if self.count >= self.limit:
                raise TooManyRequests(
                    f"{self.limit} clients follow job logs already (max_log_followers); try again shortly, or read "
                    "the lines without follow"
                )
            self.count += 1

    def leave(self) -> None:
        with self.lock:
            self.count = max(0, self.count - 1)
