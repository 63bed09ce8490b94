"""Errors raised by the connector (the Kafka service around the engine).

::

    ConnectorError
    ├── ConfigError        bad configuration or arguments; the CLI exits with code 2
    ├── RefusedError       the run may not go on (another run of the job is live); exit 2
    ├── BrokerError        the broker could not be started, reached, or behaved unexpectedly
    ├── SerdeError         a record could not be encoded or decoded
    ├── SinkError          the process writing the output failed or died
    └── WatchdogError      a process of the run (a worker, the sink, the reader) made no
                           progress for ``stall_timeout``

Messages name the field, topic, partition or offset concerned and say what to do.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """A configuration value is invalid; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Pickled as its two arguments (it crosses from the sink process to the run).
        return (type(self), (self.field, self.message))


class BrokerError(ConnectorError):
    """The Kafka broker could not be started or reached."""


class SerdeError(ConnectorError):
    """A record could not be encoded or decoded."""


class SinkError(ConnectorError):
    """The sink process (see :mod:`connector.output.sink_process`) failed or died."""


class WatchdogError(ConnectorError):
    """A process of the run made no progress for ``stall_timeout`` seconds while the run
    waited for it; ``process`` is ``"worker"``, ``"sink"`` or ``"reader"``."""

    def __init__(self, message: str, *, process: str):
        super().__init__(message)
        self.process = process

    def __reduce__(self) -> tuple[type[WatchdogError], tuple[str], dict[str, str]]:
        return (type(self), (str(self),), {"process": self.process})


class RefusedError(ConnectorError):
    """The run must not go on although nothing is misconfigured: another run of the same job
    holds its lease (:mod:`connector.job.lease`). The CLI exits with code 2."""
