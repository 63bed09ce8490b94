"""The Confluent Schema Registry client a job uses (formats ``avro-confluent``).

confluent-kafka's own client handles authentication, TLS and caching; ``mock://`` URLs give an
in-process registry for tests. Subjects follow the default TopicNameStrategy:
``<topic>-value``.

Clients are cached per settings, so one process (a job, or a test that prepares a ``mock://``
registry before running a job) shares one client and its cache per registry.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connector.config import RunConfig
from connector.errors import BrokerError, ConfigError
from connector.serde.avro import AvroSchema

__all__ = ["RegistryLookup", "register_value_schema", "registry_client"]

_CLIENTS: dict[tuple[tuple[str, str], ...], SchemaRegistryClient] = {}


def registry_client(config: RunConfig) -> SchemaRegistryClient | None:
    """The job's registry client, or ``None`` when no format needs one."""
    if "avro-confluent" not in (config.value_format, config.output_format):
        return None
    return _client_for(_conf(config))


def _client_for(conf: dict[str, str]) -> SchemaRegistryClient:
    """The cached client of these settings."""
    key = tuple(sorted(conf.items()))
    cached = _CLIENTS.get(key)
    if cached is not None:
        return cached
    try:
        client = SchemaRegistryClient.new_client(conf)
    except (ValueError, TypeError) as exc:
        # The client's messages never include the credentials' values.
        raise ConfigError(
            "schema_registry_url (--schema-registry-url, RESTREAM_SCHEMA_REGISTRY_URL)", str(exc)
        ) from exc
    _CLIENTS[key] = client
    return client


class RegistryLookup:
    """The registry's ``get_schema`` for decoders, picklable: unpickled in another process
    (a ray reader actor) it makes its own client from the same settings (a ``mock://``
    registry is per process, so there it starts empty)."""

    def __init__(self, config: RunConfig) -> None:
        self._conf = _conf(config)
        self._client: SchemaRegistryClient | None = None

    def get_schema(self, schema_id: int) -> Any:
        """The registered schema ``schema_id`` (the client caches lookups)."""
        if self._client is None:
            self._client = _client_for(self._conf)
        return self._client.get_schema(schema_id)

    def __getstate__(self) -> dict[str, Any]:
        # The client holds sockets and TLS contexts: each process makes its own.
        return {"conf": self._conf}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._conf = state["conf"]
        self._client = None


def _conf(config: RunConfig) -> dict[str, str]:
    conf: dict[str, str] = {"url": config.schema_registry_url or ""}
    if config.schema_registry_basic_auth:
        conf["basic.auth.user.info"] = config.schema_registry_basic_auth
    if config.schema_registry_ca_location:
        conf["ssl.ca.location"] = config.schema_registry_ca_location
    if config.schema_registry_cert_location:
        conf["ssl.certificate.location"] = config.schema_registry_cert_location
    if config.schema_registry_key_location:
        conf["ssl.key.location"] = config.schema_registry_key_location
    return conf


def register_value_schema(
    client: SchemaRegistryClient | None, topic: str, schema: AvroSchema
) -> int:
    """Register ``schema`` as subject ``<topic>-value`` (idempotent); return its id."""
    if client is None:
        raise ConfigError(
            "schema_registry_url (--schema-registry-url, RESTREAM_SCHEMA_REGISTRY_URL)",
            "is required with the avro-confluent format",
        )
    try:
        return int(client.register_schema(f"{topic}-value", Schema(schema.text, "AVRO")))
    except SchemaRegistryError as exc:
        raise BrokerError(
            f"cannot register the schema of {topic} with the registry: {exc}"
        ) from exc
