"""API keys: their form and hash, the method→scope table, the rate limiter, and the gatekeeper's answers."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from civicflow.access import Gatekeeper, Refusal
from civicflow.api_clients import ApiClient
from civicflow.apikeys import (
    ALL_SCOPES,
    METHOD_SCOPES,
    ApiKey,
    MalformedKey,
    RateLimiter,
    Scope,
    ShortMemory,
    actor,
    grants,
    key_from_metadata,
    parse_scopes,
    secret_matches,
)
from civicflow.v1 import intake_pb2, notifier_pb2, query_pb2, routing_pb2, work_orders_pb2
from tests.grpc_metadata import ClientsInMemory

SUBMIT = "/civicflow.v1.IntakeService/SubmitRequest"
RELOAD = "/civicflow.v1.RoutingService/ReloadRules"
SET_PREFERENCES = "/civicflow.v1.NotifierService/SetPreferences"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_issued_key_reads_back_and_only_its_secret_matches_the_stored_hash() -> None:
    key = ApiKey.issue()
    text = key.reveal()
    assert text.startswith(f"cf_{key.key_id}_")
    assert ApiKey.parse(text) == key
    assert secret_matches(key.secret, key.secret_hash)
    assert not secret_matches(ApiKey.issue().secret, key.secret_hash)
    assert key.secret not in repr(key) and key.secret not in key.secret_hash


@pytest.mark.parametrize(
    "text", ["", "cf_", "sk_abcdef123456_" + "x" * 40, "cf_ABCDEF123456_" + "x" * 40, "cf_abc_short"]
)
def test_text_that_is_not_a_key_is_refused_with_its_expected_form(text: str) -> None:
    with pytest.raises(MalformedKey, match=r"cf_<id>_<secret>"):
        ApiKey.parse(text)


def test_every_method_of_our_services_has_a_scope() -> None:
    ours = [
        f"/{service.full_name}/{method.name}"
        for module in (intake_pb2, query_pb2, routing_pb2, notifier_pb2, work_orders_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert sorted(ours) == sorted(METHOD_SCOPES)
    assert METHOD_SCOPES[RELOAD] is Scope.RULES_ADMIN


def test_scopes_by_name_with_all_and_a_helpful_error() -> None:
    assert parse_scopes(["submit", "track"]) == {Scope.SUBMIT, Scope.TRACK}
    assert parse_scopes(["all"]) == ALL_SCOPES
    with pytest.raises(ValueError, match="no scope 'rules'; choose from submit, track"):
        parse_scopes(["rules"])
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes([])


def test_the_key_comes_from_a_bearer_header_or_x_api_key() -> None:
    assert key_from_metadata([("authorization", "Bearer cf_k")]) == "cf_k"
    assert key_from_metadata([("authorization", "bearer  cf_k ")]) == "cf_k"
    assert key_from_metadata([("x-api-key", "cf_x")]) == "cf_x"
    assert key_from_metadata([("authorization", "Basic abc"), ("user-agent", "grpc")]) is None


def test_the_rate_limiter_allows_a_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_second=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0  # each client has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 60
    assert [limiter.take("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, no more


def test_the_rate_limiter_forgets_the_longest_unused_client_first() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_second=1, burst=1, clock=clock, max_clients=2)
    limiter.take("a"), limiter.take("b"), limiter.take("c")
    assert limiter.take("a") == 0  # forgotten: a full bucket again
    assert limiter.take("c") > 0


def test_short_memory_forgets_after_its_time() -> None:
    clock = FakeClock()
    memory: ShortMemory[str | None] = ShortMemory(5, clock)
    memory.remember("k", None)
    assert memory.recall("k") == (True, None)
    clock.now += 5
    assert memory.recall("k") == (False, None)


def bearer(key: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {key}")]


async def refusal(gatekeeper: Gatekeeper, method: str, metadata: list[tuple[str, str | bytes]]) -> Refusal:
    with pytest.raises(Refusal) as refused:
        await gatekeeper.admit(method, metadata)
    return refused.value


async def test_the_gatekeeper_names_the_client_or_says_why_not() -> None:
    directory, clock = ClientsInMemory(), FakeClock()
    gatekeeper = Gatekeeper(directory, RateLimiter(100, 100, clock), clock=clock)
    callcentre = directory.add("callcentre", frozenset({Scope.SUBMIT, Scope.TRACK}))
    gone = directory.add("old-portal", ALL_SCOPES, revoked=True)

    assert await gatekeeper.admit(SUBMIT, bearer(callcentre)) == "callcentre"
    assert await gatekeeper.admit("/grpc.health.v1.Health/Check", []) is None

    missing = await refusal(gatekeeper, SUBMIT, [])
    assert missing.code == grpc.StatusCode.UNAUTHENTICATED and "civicflow keys create" in missing.message
    wrong = callcentre[:-4] + ("AAAA" if not callcentre.endswith("AAAA") else "BBBB")
    assert (await refusal(gatekeeper, SUBMIT, bearer(wrong))).code == grpc.StatusCode.UNAUTHENTICATED
    revoked = await refusal(gatekeeper, SUBMIT, bearer(gone))
    assert revoked.code == grpc.StatusCode.UNAUTHENTICATED and "'old-portal' was revoked" in revoked.message
    denied = await refusal(gatekeeper, RELOAD, bearer(callcentre))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert "key 'callcentre' lacks scope 'rules-admin'" in denied.message
    unscoped = await refusal(gatekeeper, "/civicflow.v1.IntakeService/NewThing", bearer(callcentre))
    assert unscoped.code == grpc.StatusCode.PERMISSION_DENIED and "METHOD_SCOPES" in unscoped.message


async def test_a_submit_key_cannot_set_a_residents_preferences() -> None:
    directory, clock = ClientsInMemory(), FakeClock()
    gatekeeper = Gatekeeper(directory, RateLimiter(100, 100, clock), clock=clock)
    web_form = directory.add("web-form", frozenset({Scope.SUBMIT, Scope.TRACK}))
    callcentre = directory.add("callcentre", frozenset({Scope.SUBMIT, Scope.PREFERENCES}))

    denied = await refusal(gatekeeper, SET_PREFERENCES, bearer(web_form))

    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    assert "key 'web-form' lacks scope 'preferences'" in denied.message
    assert await gatekeeper.admit(SET_PREFERENCES, bearer(callcentre)) == "callcentre"
    assert parse_scopes(["all"]) >= {Scope.PREFERENCES}


async def test_reflection_is_open_only_when_asked_and_otherwise_takes_any_valid_key() -> None:
    directory, clock = ClientsInMemory(), FakeClock()
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    open_ = Gatekeeper(directory, RateLimiter(100, 100, clock), open_reflection=True, clock=clock)
    assert await open_.admit(method, []) is None
    keyed = Gatekeeper(directory, RateLimiter(100, 100, clock), clock=clock)
    assert (await refusal(keyed, method, [])).code == grpc.StatusCode.UNAUTHENTICATED
    assert await keyed.admit(method, bearer(directory.add("ops", frozenset({Scope.TRACK})))) == "ops"


async def test_a_looked_up_key_is_remembered_briefly_so_revocation_lands_within_that_time() -> None:
    directory, clock = ClientsInMemory(), FakeClock()
    gatekeeper = Gatekeeper(directory, RateLimiter(100, 100, clock), cache_seconds=5, clock=clock)
    key = directory.add("portal", frozenset({Scope.SUBMIT}))
    for _ in range(3):
        await gatekeeper.admit(SUBMIT, bearer(key))
    assert directory.lookups == 1 and len(directory.used) == 1
    stored = directory.clients[ApiKey.parse(key).key_id]
    directory.clients[stored.key_id] = ApiClient(**{**stored.__dict__, "revoked_at": datetime.now(UTC)})
    assert await gatekeeper.admit(SUBMIT, bearer(key)) == "portal"  # still remembered
    clock.now += 5
    assert (await refusal(gatekeeper, SUBMIT, bearer(key))).code == grpc.StatusCode.UNAUTHENTICATED


async def test_over_the_rate_a_key_is_told_when_to_retry_before_any_lookup() -> None:
    directory, clock = ClientsInMemory(), FakeClock()
    gatekeeper = Gatekeeper(directory, RateLimiter(per_second=4, burst=2, clock=clock), clock=clock)
    key = directory.add("portal", frozenset({Scope.SUBMIT}))
    await gatekeeper.admit(SUBMIT, bearer(key))
    await gatekeeper.admit(SUBMIT, bearer(key))
    lookups = directory.lookups
    limited = await refusal(gatekeeper, SUBMIT, bearer(key))
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in 0.25 s" in limited.message and limited.retry_after == pytest.approx(0.25)
    unknown = ApiKey.issue().reveal()
    for _ in range(2):
        await refusal(gatekeeper, SUBMIT, bearer(unknown))
    assert (await refusal(gatekeeper, SUBMIT, bearer(unknown))).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert directory.lookups == lookups + 1  # one lookup of the unknown key, then remembered, then limited


async def test_a_database_away_is_unavailable_not_unknown() -> None:
    class Away(ClientsInMemory):
        async def find(self, key_id: str) -> ApiClient | None:
            raise ConnectionRefusedError

    clock = FakeClock()
    gatekeeper = Gatekeeper(Away(), RateLimiter(100, 100, clock), clock=clock)
    away = await refusal(gatekeeper, SUBMIT, bearer(ApiKey.issue().reveal()))
    assert away.code == grpc.StatusCode.UNAVAILABLE


def test_the_actor_is_the_calling_client_inside_a_call_and_the_service_otherwise() -> None:
    from civicflow.apikeys import CALLING_CLIENT

    assert actor("intake") == "intake"
    token = CALLING_CLIENT.set("callcentre")
    try:
        assert actor("intake") == "client:callcentre"
    finally:
        CALLING_CLIENT.reset(token)


def test_work_orders_are_granted_per_department_and_never_by_all() -> None:
    assert parse_scopes(["workorders:water", "track"]) == {"workorders:water", Scope.TRACK}
    assert Scope.WORK_ORDERS not in parse_scopes(["all"]), "a person's key does not act as a department's system"
    with pytest.raises(ValueError, match="write workorders:<department_id>"):
        parse_scopes(["workorders"])
    with pytest.raises(ValueError, match="granted per department"):
        parse_scopes(["workorders:../etc"])
    assert grants(frozenset({"workorders:water"}), Scope.WORK_ORDERS)
    assert not grants(frozenset(ALL_SCOPES), Scope.WORK_ORDERS)
    assert not grants(frozenset({"workorders:water"}), Scope.TRACK)
