"""API keys for tests that run servicers on an in-process gRPC server: clients kept in memory, one key
every such server knows (all scopes), and the metadata each call carries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from civicflow.access import AccessControl, Gatekeeper
from civicflow.api_clients import ApiClient
from civicflow.apikeys import ALL_SCOPES, ApiKey, RateLimiter, Scope
from civicflow.apikeys import call_metadata as key_metadata


@dataclass
class ClientsInMemory:
    """A client directory without a database, counting its lookups."""

    clients: dict[str, ApiClient] = field(default_factory=dict)
    lookups: int = 0
    used: list[str] = field(default_factory=list)

    def add(self, name: str, scopes: frozenset[Scope], revoked: bool = False) -> str:

        key = ApiKey.issue()
        now = datetime.now(UTC)
        self.clients[key.key_id] = ApiClient(
            key.key_id, name, key.secret_hash, scopes, now, None, now if revoked else None
        )
        return key.reveal()

    async def find(self, key_id: str) -> ApiClient | None:
        self.lookups += 1
        return self.clients.get(key_id)

    async def mark_used(self, key_id: str) -> None:
        self.used.append(key_id)


TEST_CLIENTS = ClientsInMemory()
TEST_KEY = TEST_CLIENTS.add("test-suite", ALL_SCOPES)


def access_for_tests() -> AccessControl:
    """Access control for an in-process test server: knows TEST_KEY, limits nothing a test would reach."""
    return AccessControl(Gatekeeper(TEST_CLIENTS, RateLimiter(1e6, 1_000_000)))


def call_metadata() -> Sequence[tuple[str, str]]:
    """What each call to an in-process test server sends besides its message."""
    return key_metadata(TEST_KEY)
