"""gRPC servers as every service builds them: TLS (mutual with a client CA), bind host, keyed reflection."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from civicflow.access import AccessControl, Gatekeeper, SendsApiKey
from civicflow.apikeys import CALLING_CLIENT, RateLimiter, Scope
from civicflow.grpc_tls import TlsMisconfigured, channel_credentials, server_credentials
from civicflow.infra import free_port
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings
from civicflow.v1 import query_pb2, query_pb2_grpc
from tests.grpc_metadata import ClientsInMemory


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key (so it is also its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class NamesTheCaller(query_pb2_grpc.CaseQueryServiceServicer):
    async def GetCase(self, request: query_pb2.GetCaseRequest, context: grpc.aio.ServicerContext) -> query_pb2.CaseView:
        return query_pb2.CaseView(tracking_number=request.tracking_number, status=f"asked by {CALLING_CLIENT.get()}")


@contextlib.asynccontextmanager
async def serving(settings: KernelSettings, directory: ClientsInMemory) -> AsyncIterator[int]:
    port = free_port()
    servicer = NamesTheCaller()
    server = await build_grpc_server(
        port,
        [
            (
                "civicflow.v1.CaseQueryService",
                lambda s: query_pb2_grpc.add_CaseQueryServiceServicer_to_server(servicer, s),
            )
        ],
        "tls-test",
        settings,
        AccessControl(Gatekeeper(directory, RateLimiter(100, 100))),
    )
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.fixture
def server_cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path, "server")


async def test_a_keyed_call_over_tls_is_answered_for_its_client(tmp_path: Path, server_cert: tuple[Path, Path]) -> None:
    cert, key = server_cert
    directory = ClientsInMemory()
    api_key = directory.add("portal", frozenset({Scope.TRACK}))
    settings = KernelSettings(grpc_tls_cert_file=cert, grpc_tls_key_file=key)
    client = KernelSettings(grpc_tls_ca_file=cert)
    credentials = channel_credentials(client)
    assert credentials is not None
    async with serving(settings, directory) as port:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.secure_channel(target, credentials, interceptors=[SendsApiKey(api_key)]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == 1
            view = await query_pb2_grpc.CaseQueryServiceStub(channel).GetCase(
                query_pb2.GetCaseRequest(tracking_number="QGPE-J5T"), timeout=10
            )
            assert view.status == "asked by portal"
        async with grpc.aio.insecure_channel(target) as plain:  # plain text to a TLS server gets nowhere
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_turns_away_a_client_without_a_certificate(
    tmp_path: Path, server_cert: tuple[Path, Path]
) -> None:
    cert, key = server_cert
    client_cert, client_key = self_signed(tmp_path, "client")
    settings = KernelSettings(grpc_tls_cert_file=cert, grpc_tls_key_file=key, grpc_tls_client_ca_file=client_cert)
    with_cert = channel_credentials(
        KernelSettings(
            grpc_tls_ca_file=cert, grpc_tls_client_cert_file=client_cert, grpc_tls_client_key_file=client_key
        )
    )
    without = channel_credentials(KernelSettings(grpc_tls_ca_file=cert))
    assert with_cert is not None and without is not None
    async with serving(settings, ClientsInMemory()) as port:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.secure_channel(target, with_cert) as channel:
            assert (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)).status
        async with grpc.aio.secure_channel(target, without) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


def test_half_a_tls_setting_says_which_other_one_is_missing(tmp_path: Path) -> None:
    with pytest.raises(TlsMisconfigured, match="both CIVICFLOW_GRPC_TLS_CERT_FILE and CIVICFLOW_GRPC_TLS_KEY_FILE"):
        server_credentials(KernelSettings(grpc_tls_cert_file=tmp_path / "cert.pem"))
    with pytest.raises(TlsMisconfigured, match="cannot be read"):
        server_credentials(KernelSettings(grpc_tls_cert_file=tmp_path / "no.pem", grpc_tls_key_file=tmp_path / "no"))
    assert server_credentials(KernelSettings()) is None


def test_servers_bind_loopback_in_development_and_every_interface_in_production() -> None:
    assert KernelSettings(environment="development").grpc_bind_host == "127.0.0.1"
    assert KernelSettings(environment="production").grpc_bind_host == "0.0.0.0"
    assert KernelSettings(environment="development", grpc_host="10.0.0.5").grpc_bind_host == "10.0.0.5"


async def test_reflection_in_production_needs_a_key(tmp_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    directory = ClientsInMemory()
    key = directory.add("ops", frozenset({Scope.TRACK}))
    production = KernelSettings(environment="production", grpc_host="127.0.0.1")
    port = free_port()
    gatekeeper = Gatekeeper(directory, RateLimiter(100, 100), open_reflection=False)
    server = await build_grpc_server(port, [], "reflection-test", production, AccessControl(gatekeeper))
    await server.start()
    asking = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([asking]), timeout=10
                ):
                    pass
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([asking]), timeout=10, metadata=(("x-api-key", key),)
            )
            listed = [s.name async for answer in answers for s in answer.list_services_response.service]
        assert "grpc.health.v1.Health" in listed
    finally:
        await server.stop(None)
