"""The city's API clients in PostgreSQL (access.api_clients): create, list, revoke, and look up by key id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow.apikeys import ALL_SCOPES, CLIENT_NAME, ApiKey, MalformedKey, Scope, is_department_scope, secret_matches

LOCAL_CLI = "local-cli"
_SCOPE_NAMES = frozenset(s.value for s in Scope)


@dataclass(frozen=True)
class ApiClient:
    key_id: str
    name: str
    secret_sha256: str
    scopes: frozenset[str]  # Scope members, and `workorders:<department_id>` for each department it acts for
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ClientRefused(ValueError):
    """A create or revoke that cannot be done as asked; the message says what to do instead."""


def _client(row: Row[Any]) -> ApiClient:
    found = row._mapping
    return ApiClient(
        found["key_id"],
        found["name"],
        found["secret_sha256"],
        # a scope this version does not know (written by a newer one) grants nothing here
        frozenset(
            Scope(s) if s in _SCOPE_NAMES else s for s in found["scopes"] if s in _SCOPE_NAMES or is_department_scope(s)
        ),
        found["created_at"],
        found["last_used_at"],
        found["revoked_at"],
    )


_COLUMNS = "key_id, name, secret_sha256, scopes, created_at, last_used_at, revoked_at"


async def create_client(engine: AsyncEngine, name: str, scopes: frozenset[str]) -> ApiKey:
    """A new key for `name`; the only time its secret exists outside the caller's hands."""
    if not CLIENT_NAME.match(name):
        raise ClientRefused(
            f"client name {name!r} is not allowed: use 1 to 63 lower-case letters, digits, '.', '_' or '-',"
            " e.g. callcentre or web-portal"
        )
    key = ApiKey.issue()
    try:
        async with engine.begin() as tx:
            await tx.execute(
                text(
                    "INSERT INTO access.api_clients (key_id, name, secret_sha256, scopes)"
                    " VALUES (:id, :name, :hash, :scopes)"
                ),
                {"id": key.key_id, "name": name, "hash": key.secret_hash, "scopes": sorted(str(s) for s in scopes)},
            )
    except IntegrityError:
        raise ClientRefused(
            f"client {name!r} already has a live key; revoke it first (`civicflow keys revoke {name}`) or pick"
            " another name"
        ) from None
    return key


async def list_clients(engine: AsyncEngine) -> list[ApiClient]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT {_COLUMNS} FROM access.api_clients ORDER BY name, created_at"))
        return [_client(row) for row in rows]


async def revoke_client(engine: AsyncEngine, name_or_id: str) -> ApiClient:
    """Revoke the live key of a client name, or the key with that id."""
    async with engine.begin() as tx:
        row = (
            await tx.execute(
                text(
                    f"UPDATE access.api_clients SET revoked_at = now()"
                    f" WHERE revoked_at IS NULL AND (name = :x OR key_id = :x) RETURNING {_COLUMNS}"
                ),
                {"x": name_or_id},
            )
        ).first()
    if row is None:
        raise ClientRefused(f"no live key named or with id {name_or_id!r}; `civicflow keys list` shows them")
    return _client(row)


class PostgresClientDirectory:
    """Where the gRPC servers look keys up (civicflow.access.ClientDirectory)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find(self, key_id: str) -> ApiClient | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(f"SELECT {_COLUMNS} FROM access.api_clients WHERE key_id = :id"), {"id": key_id}
                )
            ).first()
        return None if row is None else _client(row)

    async def mark_used(self, key_id: str) -> None:
        async with self._engine.begin() as tx:
            await tx.execute(
                text("UPDATE access.api_clients SET last_used_at = now() WHERE key_id = :id"), {"id": key_id}
            )


async def local_key(
    engine: AsyncEngine, kept: str | None, name: str = LOCAL_CLI, scopes: frozenset[str] = ALL_SCOPES
) -> str:
    """The key for this machine's CLI, with every scope (or a sample system's, with its own): `kept` (from the
    state folder's key file) while the database still knows it live; otherwise (first start, a fresh database)
    the old live key of `name` is revoked and a new one made, which the caller keeps."""
    try:
        key = ApiKey.parse(kept) if kept else None
    except MalformedKey:
        key = None
    stored = await PostgresClientDirectory(engine).find(key.key_id) if key else None
    # A key made before a scope existed is made again, so this machine's CLI always holds every scope.
    if (
        key
        and stored
        and stored.revoked_at is None
        and stored.scopes >= scopes
        and secret_matches(key.secret, stored.secret_sha256)
    ):
        return key.reveal()
    try:
        await revoke_client(engine, name)
    except ClientRefused:
        pass  # none live
    return (await create_client(engine, name, scopes)).reveal()


def read_key_file(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def write_key_file(path: Path, key: str) -> None:
    """Readable by its owner only; written aside and moved into place, so a reader never sees half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.replace(draft, path)
