"""Metadata every test's gRPC call to an in-process server carries: the one place to add credentials."""

from __future__ import annotations

from collections.abc import Sequence


def call_metadata() -> Sequence[tuple[str, str]]:
    """What each call sends besides its message; empty while the servers ask for nothing."""
    return ()
