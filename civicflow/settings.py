"""Settings shared by every service, read from the environment with the CIVICFLOW_ prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SAMPLE_CITY = Path(__file__).resolve().parents[1] / "samples" / "city" / "sample_city.yaml"


class KernelSettings(BaseSettings):
    """What every civicflow process needs: where the store and the broker are, and how to talk to them."""

    model_config = SettingsConfigDict(env_prefix="CIVICFLOW_", extra="ignore")

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of PostgreSQL; empty means the embedded server under state_dir.",
    )
    kafka_bootstrap_servers: str = Field(
        default="", description="Kafka bootstrap servers; empty means the embedded broker started by `dev`."
    )
    state_dir: Path = Field(default=Path(".civicflow"), description="Where embedded data, mail and logs live.")
    environment: Literal["development", "production"] = Field(
        default="development",
        description="development: servers bind loopback and missing secrets are generated under state_dir;"
        " production: servers bind grpc_host and a missing or default secret stops the process at start.",
    )
    grpc_host: str = Field(
        default="",
        description="Interface every gRPC server binds; empty: 127.0.0.1 in development, 0.0.0.0 in production.",
    )
    grpc_tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain the gRPC servers present; set with the key file to serve TLS."
    )
    grpc_tls_key_file: Path | None = Field(default=None, description="PEM private key of grpc_tls_cert_file.")
    grpc_tls_client_ca_file: Path | None = Field(
        default=None,
        description="Mutual TLS: the servers accept only clients with a certificate signed by this CA (PEM).",
    )
    grpc_tls_ca_file: Path | None = Field(
        default=None,
        description="Clients (the CLI): call the servers over TLS, trusting this CA (PEM); unset: plain text.",
    )
    grpc_tls_client_cert_file: Path | None = Field(
        default=None, description="Clients under mutual TLS: their certificate (PEM), with grpc_tls_client_key_file."
    )
    grpc_tls_client_key_file: Path | None = None
    api_key_rate_per_second: float = Field(
        default=50.0, description="Calls a second each API key may make to one server process, on average."
    )
    api_key_burst: int = Field(default=100, description="Calls an API key may make at once above its rate.")
    api_key_cache_seconds: float = Field(
        default=5.0, description="How long a server trusts a key it looked up; a revoked key works at most this long."
    )
    city_file: Path = Field(
        default=SAMPLE_CITY, description="The jurisdiction's city file: catalogue, service area, departments, rules."
    )
    event_signing_key: str = Field(
        default="",
        description="HMAC key the relay signs every published event with and consumers check; empty in"
        " development: one generated under state_dir. Every process of one system needs the same key.",
    )
    case_events_topic: str = "civicflow.case-events"
    dead_letter_topic: str = "civicflow.case-events.dlq"
    # 4 is what the embedded broker gives a topic it creates by itself (when a client asks for a missing
    # topic after the broker restarted empty), so a recreated topic keeps the same partitions.
    # Production sets its own count (deploy/).
    topic_partitions: int = 4
    topic_replication: int = 1
    # Small group timeouts keep restarts quick on one machine; production raises them.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1000
    consumer_batch_size: int = 200
    handler_attempts: int = 5
    handler_retry_base_seconds: float = 0.2
    # retries of transient failures (a database down, TryLater) wait at most this long between tries
    handler_max_backoff_seconds: float = 30.0
    relay_batch_size: int = Field(
        default=2000,
        description="Events the relay reads and sends before waiting for the broker's acknowledgements.",
    )
    kafka_max_message_bytes: int = Field(
        default=1_048_576,
        description="Largest record the relay publishes (set it to the broker's message.max.bytes); an event"
        " larger than this is parked in events.relay_parked instead of stopping the relay.",
    )
    dead_letter_max_bytes: int = Field(
        default=64 * 1_048_576,
        description="Largest record a consumer forwards whole to the dead-letter topic; a larger one is"
        " dead-lettered without its value (the dlq_error says so).",
    )
    relay_idle_poll_seconds: float = Field(
        default=0.05,
        description="How soon the relay looks again after a commit was announced (LISTEN/NOTIFY) but was not"
        " yet readable: an older transaction still running holds the store's readers back.",
    )
    relay_fallback_poll_seconds: float = Field(
        default=1.0,
        description="How often the relay looks for events when no commit was announced, in case a"
        " notification was lost (its listening connection dropped) or a transaction that held it back ended.",
    )
    relay_standby_poll_seconds: float = 1.0
    log_level: str = "INFO"
    metrics_port: int | None = Field(default=None, description="Serve Prometheus /metrics on this port; unset: none.")
    metrics_host: str = "127.0.0.1"
    pii_master_key: str = Field(
        default="",
        description="Key that wraps residents' per-case keys; empty means one generated under state_dir.",
    )

    @property
    def grpc_bind_host(self) -> str:
        """The interface gRPC servers listen on: loopback in development unless told otherwise."""
        return self.grpc_host or ("127.0.0.1" if self.environment == "development" else "0.0.0.0")
