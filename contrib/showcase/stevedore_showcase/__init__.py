"""Examples of stevedore-server's protocols, served as a plugin: next-day (content types), countdown (streaming)
and routes of its own (the ``stevedore_routes`` hook)."""

from __future__ import annotations

from .countdown import Countdown
from .next_day import NextDay

__all__ = ["Countdown", "NextDay"]
