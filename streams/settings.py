"""Runtime settings, read from ``VIGIL_*`` environment variables.

Broker selection: ``VIGIL_BROKER=kafka://host:port[,host:port]`` points at any
Kafka cluster. Client security passes through from the environment:

==============================  ==========================================
VIGIL_KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
VIGIL_KAFKA_SASL_MECHANISM      PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
VIGIL_KAFKA_SASL_USERNAME       SASL user
VIGIL_KAFKA_SASL_PASSWORD       SASL password
VIGIL_KAFKA_SSL_CAFILE          CA bundle to verify the brokers
VIGIL_KAFKA_SSL_CERTFILE        client certificate (mutual TLS)
VIGIL_KAFKA_SSL_KEYFILE         client key (mutual TLS)
==============================  ==========================================
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

ENV_BROKER = "VIGIL_BROKER"
NO_BROKER_HELP = (
    "no Kafka broker is configured. Either start the embedded one in another terminal with "
    "`vigil broker` and export the VIGIL_BROKER it prints, or point VIGIL_BROKER at your cluster, "
    "e.g. VIGIL_BROKER=kafka://kafka-1:9092,kafka-2:9092 (see README)."
)


class BrokerNotConfigured(RuntimeError):
    def __init__(self) -> None:
        super().__init__(NO_BROKER_HELP)


def parse_broker_url(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` (or a bare ``h1:9092,h2:9092``) -> ["h1:9092", "h2:9092"]."""
    hosts = []
    for part in url.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            scheme, part = part.split("://", 1)
            if scheme not in ("kafka", "aiokafka"):
                raise ValueError(f"{ENV_BROKER} must use kafka://, got {scheme}://")
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"broker address {part!r} must be host:port")
        hosts.append(part)
    if not hosts:
        raise ValueError(f"{ENV_BROKER}={url!r} names no broker")
    return hosts


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    broker_hosts: tuple[str, ...] | None = None
    app_id: str = "vigil"
    topic_prefix: str = ""
    partitions: int = 8
    replication: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    schema_registry: str | None = None
    models_dir: Path = Path(".vigil/models")
    assets_file: Path | None = None
    baseline_windows: int = 30
    max_chunk_samples: int = 240_000
    batch_size: int = 256
    batch_within_s: float = 0.05
    # Faust hard-codes a 1.5 s fetch long-poll; measured here, an agent slower
    # than its fetches then idles ~1.4 s per ~900 events. 100 ms fixed it.
    fetch_max_wait_ms: int = 100
    # Group membership: production Kafka defaults are gentle; tests shorten them.
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    commit_interval_s: float = 1.0
    producer_linger_ms: float = 5.0
    producer_max_batch_bytes: int = 262_144
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    security: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        broker = env.get(ENV_BROKER)
        security = {
            key: env[f"VIGIL_KAFKA_{key.upper()}"]
            for key in ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if env.get(f"VIGIL_KAFKA_{key.upper()}")
        }
        settings = cls(
            broker_hosts=tuple(parse_broker_url(broker)) if broker else None,
            app_id=env.get("VIGIL_APP_ID", "vigil"),
            topic_prefix=env.get("VIGIL_TOPIC_PREFIX", ""),
            partitions=_int(env, "VIGIL_PARTITIONS", 8),
            replication=_int(env, "VIGIL_REPLICATION", 1),
            retention_ms=_int(env, "VIGIL_RETENTION_MS", 7 * 24 * 3600 * 1000),
            schema_registry=env.get("VIGIL_SCHEMA_REGISTRY") or None,
            models_dir=Path(env.get("VIGIL_MODELS", ".vigil/models")),
            assets_file=Path(env["VIGIL_ASSETS"]) if env.get("VIGIL_ASSETS") else None,
            baseline_windows=_int(env, "VIGIL_BASELINE_WINDOWS", 30),
            max_chunk_samples=_int(env, "VIGIL_MAX_CHUNK_SAMPLES", 240_000),
            batch_size=_int(env, "VIGIL_BATCH_SIZE", 256),
            batch_within_s=_float(env, "VIGIL_BATCH_WITHIN_S", 0.05),
            fetch_max_wait_ms=_int(env, "VIGIL_FETCH_MAX_WAIT_MS", 100),
            session_timeout_s=_float(env, "VIGIL_SESSION_TIMEOUT_S", 30.0),
            heartbeat_interval_s=_float(env, "VIGIL_HEARTBEAT_INTERVAL_S", 3.0),
            commit_interval_s=_float(env, "VIGIL_COMMIT_INTERVAL_S", 1.0),
            producer_linger_ms=_float(env, "VIGIL_PRODUCER_LINGER_MS", 5.0),
            producer_max_batch_bytes=_int(env, "VIGIL_PRODUCER_MAX_BATCH_BYTES", 262_144),
            web_port=_int(env, "VIGIL_WEB_PORT", 6066),
            web_host=env.get("VIGIL_WEB_HOST", "127.0.0.1"),
            security=security,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"VIGIL_PARTITIONS must be >= 1, got {self.partitions}")
        if self.replication < 1:
            raise ValueError(f"VIGIL_REPLICATION must be >= 1, got {self.replication}")
        if self.baseline_windows < 2:
            raise ValueError(f"VIGIL_BASELINE_WINDOWS must be >= 2, got {self.baseline_windows}")
        if self.batch_size < 1:
            raise ValueError(f"VIGIL_BATCH_SIZE must be >= 1, got {self.batch_size}")
        protocol = self.security.get("security_protocol", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"VIGIL_KAFKA_SECURITY_PROTOCOL must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got {protocol}")

    def with_broker(self, bootstrap: str) -> "Settings":
        return replace(self, broker_hosts=tuple(parse_broker_url(bootstrap)))

    def require_broker(self) -> tuple[str, ...]:
        if not self.broker_hosts:
            raise BrokerNotConfigured()
        return self.broker_hosts

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.require_broker())

    @property
    def broker_urls(self) -> list[str]:
        return [f"kafka://{h}" for h in self.require_broker()]

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def confluent_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka configuration for confluent-kafka clients, security included."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        mapping = {
            "security_protocol": "security.protocol",
            "sasl_mechanism": "sasl.mechanism",
            "sasl_username": "sasl.username",
            "sasl_password": "sasl.password",
            "ssl_cafile": "ssl.ca.location",
            "ssl_certfile": "ssl.certificate.location",
            "ssl_keyfile": "ssl.key.location",
        }
        for key, value in self.security.items():
            conf[mapping[key]] = value
        conf.update(extra)
        return conf

    def faust_credentials(self) -> tuple[Any, Any]:
        """(broker_credentials, ssl_context) for Faust, from the same variables."""
        protocol = self.security.get("security_protocol", "PLAINTEXT").upper()
        if protocol == "PLAINTEXT":
            return None, None
        import ssl

        import faust

        ssl_context = None
        if protocol in ("SSL", "SASL_SSL"):
            ssl_context = ssl.create_default_context(cafile=self.security.get("ssl_cafile"))
            if self.security.get("ssl_certfile"):
                ssl_context.load_cert_chain(self.security["ssl_certfile"], self.security.get("ssl_keyfile"))
        if protocol == "SSL":
            return faust.SSLCredentials(ssl_context), ssl_context
        mechanism = self.security.get("sasl_mechanism", "PLAIN").upper()
        credentials = faust.SASLCredentials(
            username=self.security.get("sasl_username"),
            password=self.security.get("sasl_password"),
            ssl_context=ssl_context,
            mechanism=mechanism,
        )
        return credentials, ssl_context
