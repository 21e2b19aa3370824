"""Fails at import, as a plugin does when a library it needs is missing from the machine."""

from __future__ import annotations

raise ImportError("stevedore-test-broken needs libwidget, which is not installed")
