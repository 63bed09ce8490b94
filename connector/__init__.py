"""restream's Kafka service: everything between the engine and a Kafka cluster.

One room per concern; each subpackage's ``__init__`` is its public API and a map of its folder::

    config.py, errors.py  the job's settings (flag, environment, YAML) and the errors the CLI
                          turns into exit codes
    pipeline_loader.py    the ``pipeline`` setting to an engine Pipeline (built-in or
                          ``module:function``), with its default inputs and outputs
    kafka/                Kafka clients: offsets (read only), the bulk producer, murmur2
    positions/            replay positions: syntax, resolution to offset ranges, the table
    serde/                record values to columns and back (Avro, Confluent, JSON), keys,
                          the Schema Registry client
    input/                the reader (the engine's Source for Kafka) and dead letters
    output/               output topics, the sink, the sink process
    job/                  ``restream run``: the job start to finish, and its checkpoints
    runtime/              child processes, the garbage-collector policy, fail points
    observability/        metrics, progress, log line setup
    cli/                  the ``restream`` command

The embedded broker, the generator, the demo and the benches are :mod:`tooling`, outside the
service. The engine (:mod:`engine`) never imports any of this.
"""

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
