"""Shared secrets (webhook signing, event signing): given by the operator, or made once per state folder.

A secret is never a value published in this repository. Outside development a process that was given
no secret, or a known default, refuses to start and says which setting to set; in development (`civicflow
dev`, the tests) each state folder gets its own random secret, kept in a file only its owner can read,
so every process started on that folder agrees on it without anyone typing it.
"""

from __future__ import annotations

import os
import secrets as random_secrets
from pathlib import Path

from civicflow.settings import KernelSettings

# Values that have been published (in this repository's history, its docs or its samples): never a secret.
PUBLISHED_DEFAULTS = frozenset({"dev-webhook-secret", "changeme", "change-me", "secret", "test-secret"})
MIN_LENGTH = 16


class UnsafeSecret(RuntimeError):
    """A process outside development was started without a real secret."""


def shared_secret(settings: KernelSettings, configured: str, setting: str, file_name: str) -> str:
    """The secret to use for `setting` (an environment variable name, for the message).

    The configured value when it is a real one; in development, one kept in <state_dir>/<file_name>
    (created once); in production, UnsafeSecret."""
    if configured and configured not in PUBLISHED_DEFAULTS and len(configured) >= MIN_LENGTH:
        return configured
    if settings.environment == "production":
        what = (
            "empty" if not configured else ("a published default" if configured in PUBLISHED_DEFAULTS else "too short")
        )
        raise UnsafeSecret(
            f"{setting} is {what}; set it to a random value of at least {MIN_LENGTH} characters,"
            " e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return _kept_in(settings.state_dir, file_name)


def _kept_in(state_dir: Path, file_name: str) -> str:
    """A random secret stored in the state folder, readable only by its owner; the same on every call.
    Written to a temporary file and linked into place, so a process starting at the same moment reads
    either nothing (and links its own, losing the race) or the whole secret, never half of one."""
    path = state_dir / "secrets" / file_name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        draft = path.with_name(f".{file_name}.{os.getpid()}.{random_secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(random_secrets.token_urlsafe(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: use its secret
        finally:
            draft.unlink()
    return path.read_text().strip()


def event_signing_key(settings: KernelSettings) -> bytes:
    """The key the relay signs events with and consumers check them by; the same in every process of a
    system (one setting, or one file in the shared state folder)."""
    key = shared_secret(settings, settings.event_signing_key, "CIVICFLOW_EVENT_SIGNING_KEY", "event-signing.key")
    return key.encode()
