"""TLS for civicflow's gRPC servers and clients, from PEM files named by settings."""

from __future__ import annotations

from pathlib import Path

import grpc

from civicflow.settings import KernelSettings


class TlsMisconfigured(ValueError):
    """TLS settings that cannot work together; the message names the setting to fix."""


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsMisconfigured(f"{setting}={path} cannot be read ({exc.strerror}); point it at a PEM file") from None


def server_credentials(settings: KernelSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate and key are set (mutual TLS with a client CA), else None: plain text."""
    cert, key, client_ca = settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file
    if cert is None and key is None:
        if client_ca is not None:
            raise TlsMisconfigured(
                "CIVICFLOW_GRPC_TLS_CLIENT_CA_FILE needs CIVICFLOW_GRPC_TLS_CERT_FILE and CIVICFLOW_GRPC_TLS_KEY_FILE"
            )
        return None
    if cert is None or key is None:
        raise TlsMisconfigured("set both CIVICFLOW_GRPC_TLS_CERT_FILE and CIVICFLOW_GRPC_TLS_KEY_FILE, or neither")
    pair = (_read(key, "CIVICFLOW_GRPC_TLS_KEY_FILE"), _read(cert, "CIVICFLOW_GRPC_TLS_CERT_FILE"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca, "CIVICFLOW_GRPC_TLS_CLIENT_CA_FILE"), require_client_auth=True
    )


def channel_credentials(settings: KernelSettings) -> grpc.ChannelCredentials | None:
    """What a client calls with: TLS trusting grpc_tls_ca_file (with its own certificate under mutual TLS),
    else None: plain text."""
    if settings.grpc_tls_ca_file is None:
        return None
    cert, key = settings.grpc_tls_client_cert_file, settings.grpc_tls_client_key_file
    if (cert is None) != (key is None):
        raise TlsMisconfigured(
            "set both CIVICFLOW_GRPC_TLS_CLIENT_CERT_FILE and CIVICFLOW_GRPC_TLS_CLIENT_KEY_FILE, or neither"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.grpc_tls_ca_file, "CIVICFLOW_GRPC_TLS_CA_FILE"),
        private_key=_read(key, "CIVICFLOW_GRPC_TLS_CLIENT_KEY_FILE") if key else None,
        certificate_chain=_read(cert, "CIVICFLOW_GRPC_TLS_CLIENT_CERT_FILE") if cert else None,
    )
