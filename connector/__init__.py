"""restream's Kafka service: positions, reading, serde, output, CLI, metrics, the local broker."""

from __future__ import annotations

from connector.errors import BrokerError, ConfigError, ConnectorError, SerdeError, SinkError

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "ConfigError",
    "ConnectorError",
    "SerdeError",
    "SinkError",
    "__version__",
]
