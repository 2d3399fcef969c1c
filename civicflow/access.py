"""Who may call which gRPC method: every call's API key checked, scoped, rate-limited, and its client named."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog

from civicflow.api_clients import ApiClient
from civicflow.apikeys import (
    CALLING_CLIENT,
    METHOD_SCOPES,
    NO_KEY,
    OPEN_SERVICES,
    REFLECTION_SERVICES,
    ApiKey,
    Clock,
    MalformedKey,
    RateLimiter,
    Scope,
    ShortMemory,
    call_metadata,
    grants,
    key_from_metadata,
    secret_matches,
)
from civicflow.grpc_wrapping import answer_of, answered_by

log = structlog.get_logger(__name__)

# The client whose keyed call is being answered, scopes and key id with it, for a servicer that decides more
# than the method's scope (WorkOrderSync: which department a key may act for). Set for unary and
# server-streaming calls alike.
CALLER: ContextVar[ApiClient | None] = ContextVar("civicflow_caller", default=None)


class ClientDirectory(Protocol):
    async def find(self, key_id: str) -> ApiClient | None: ...

    async def mark_used(self, key_id: str) -> None: ...


class NoClients:
    """A directory that knows no key: every keyed method is refused (a server built without one)."""

    async def find(self, key_id: str) -> ApiClient | None:
        return None

    async def mark_used(self, key_id: str) -> None:
        return None


@dataclass(frozen=True)
class Refusal(Exception):
    code: grpc.StatusCode
    message: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


def _short(method: str) -> str:
    """'/civicflow.v1.RoutingService/ReloadRules' → 'RoutingService.ReloadRules', as people say it."""
    service, _, name = method.strip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}.{name}"


class Gatekeeper:
    """Decides one call: the client it is for (None for open methods), or a Refusal saying why not.

    Order matters: the rate limit comes before any lookup, so a flood costs the database nothing; a
    looked-up key is remembered for `cache_seconds` (revoking a key takes effect within that time).
    The price of limiting before checking: someone who knows a key's id (not secret, but shown only by
    `civicflow keys list`) and not its secret can use up that key's rate on one server process."""

    def __init__(
        self,
        directory: ClientDirectory,
        limiter: RateLimiter,
        *,
        cache_seconds: float = 5.0,
        open_reflection: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._directory = directory
        self._limiter = limiter
        self._open_reflection = open_reflection
        self._known: ShortMemory[ApiClient | None] = (
            ShortMemory(cache_seconds) if clock is None else ShortMemory(cache_seconds, clock)
        )

    def is_open(self, method: str) -> bool:
        return method.startswith(OPEN_SERVICES) or (self._open_reflection and method.startswith(REFLECTION_SERVICES))

    async def admit(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """The name of the client the call is for (None for open methods), or a Refusal saying why not."""
        client = await self.admit_client(method, metadata)
        return None if client is None else client.name

    async def admit_client(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> ApiClient | None:
        if self.is_open(method):
            return None
        reflection = method.startswith(REFLECTION_SERVICES)  # any valid key may list the methods
        scope = METHOD_SCOPES.get(method)
        if scope is None and not reflection:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_short(method)} is open to no API key yet: it needs a scope in civicflow/apikeys.py METHOD_SCOPES",
            )
        given = key_from_metadata(metadata)
        if given is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, NO_KEY)
        try:
            key = ApiKey.parse(given)
        except MalformedKey as exc:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        wait = self._limiter.take(key.key_id)
        if wait:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many calls with this API key (at most {self._limiter.per_second:g} a second, bursts of"
                f" {self._limiter.burst}); retry in {wait:.2f} s",
                retry_after=wait,
            )
        client = await self._client(key)
        if client is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "API key not recognised (mistyped, or issued by another civicflow system); check it, or create one"
                " with `civicflow keys create`",
            )
        if client.revoked_at is not None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the API key of '{client.name}' was revoked; ask for a new one (`civicflow keys create`)",
            )
        if scope is not None and not grants(client.scopes, scope):
            named = f"{scope}:<department_id>" if scope is Scope.WORK_ORDERS else scope
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"key '{client.name}' lacks scope '{named}' (needed for {_short(method)}); a key with it is made"
                f" with `civicflow keys create NAME --scope {named}`",
            )
        return client

    async def _client(self, key: ApiKey) -> ApiClient | None:
        """The client the key belongs to, when its secret is right."""
        known, client = self._known.recall(key.key_id)
        if not known:
            try:
                client = await self._directory.find(key.key_id)
            except Exception as exc:  # the database away: say so, rather than a bare UNKNOWN
                log.warning("API key lookup failed", error=type(exc).__name__)
                raise Refusal(
                    grpc.StatusCode.UNAVAILABLE, "cannot check API keys right now; try again in a few seconds"
                ) from None
            self._known.remember(key.key_id, client)
            if client is not None and client.revoked_at is None and secret_matches(key.secret, client.secret_sha256):
                try:  # "last used" is as fresh as the cache period; a failure here must not fail the call
                    await self._directory.mark_used(key.key_id)
                except Exception as exc:
                    log.warning("could not record when an API key was used", error=type(exc).__name__)
        if client is None or not secret_matches(key.secret, client.secret_sha256):
            return None
        return client


Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


def _refusing(handler: grpc.RpcMethodHandler, refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers with the refusal; the request is never even parsed."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if refusal.retry_after is not None:
            context.set_trailing_metadata((("retry-after", f"{refusal.retry_after:.3f}"),))
        await context.abort(refusal.code, refusal.message)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, response_serializer=handler.response_serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(refuse, response_serializer=handler.response_serializer)


def _on_behalf_of(handler: grpc.RpcMethodHandler, client: ApiClient) -> grpc.RpcMethodHandler:
    """The same unary handler, answering with CALLING_CLIENT and CALLER set, so what it records names the
    client."""
    answer: Handler = handler.unary_unary

    async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token, caller = CALLING_CLIENT.set(client.name), CALLER.set(client)
        try:
            return await answer_of(answer, request, context)
        finally:
            CALLER.reset(caller)
            CALLING_CLIENT.reset(token)

    return answered_by(handler, answered)


def _streaming_on_behalf_of(handler: grpc.RpcMethodHandler, client: ApiClient) -> grpc.RpcMethodHandler:
    """The same server-streaming handler (an async generator, as ours are), with CALLING_CLIENT and CALLER
    set while it runs. grpc.aio runs each call in a task of its own, so nothing here leaks into another."""
    stream: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]] = handler.unary_stream

    async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        CALLING_CLIENT.set(client.name)
        CALLER.set(client)
        async for message in stream(request, context):
            yield message

    return grpc.unary_stream_rpc_method_handler(
        streamed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AccessControl(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio has no type hints
    """Installed on every server by civicflow.runtime.build_grpc_server; the Gatekeeper decides."""

    def __init__(self, gatekeeper: Gatekeeper) -> None:
        self._gatekeeper = gatekeeper

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self._gatekeeper.is_open(method):
            return handler
        try:
            client = await self._gatekeeper.admit_client(method, handler_call_details.invocation_metadata or ())
        except Refusal as refusal:
            log.info("gRPC call refused", method=method, code=refusal.code.name)
            return _refusing(handler, refusal)
        if client is None:
            return handler
        if handler.unary_unary is not None:
            return _on_behalf_of(handler, client)
        if handler.unary_stream is not None:
            return _streaming_on_behalf_of(handler, client)
        return handler


class SendsApiKey(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A client channel's interceptor that adds the key to every unary call (tests, the benchmark)."""

    def __init__(self, key: str) -> None:
        self._metadata = call_metadata(key)

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *self._metadata)
        return await continuation(client_call_details._replace(metadata=metadata), request)
