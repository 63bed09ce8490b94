"""`restream run` never hangs, and fails with one clear message: watchdogs on stopped workers
and sink processes, killed workers, and the failure paths of start-up (full or read-only
volumes, a full /dev/shm, an unreachable broker, input topics that are gone).

Each scenario runs the CLI as a subprocess and checks its exit code, its last line and that no
traceback reached stderr. Volumes are made full or read-only in a private mount namespace
(``unshare``), so nothing outside the job sees them.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.config import load_config
from connector.job.checkpoints import FileCheckpoints, Manifest, fingerprint
from connector.job.run import build_job, fingerprint_parts
from connector.positions.ranges import PartitionRange
from engine.examples.social.data import generate_social
from tests.support.procs import running
from tooling.broker import LocalBroker
from tooling.generate import write_social

PARTITIONS = 2
STALL = 6


@pytest.fixture(scope="module")
def topics(broker: LocalBroker) -> tuple[str, str]:
    data = generate_social(users=5_000, events=300_000, days=5, seed=5, partitions=PARTITIONS)
    prefix = f"fail-{uuid.uuid4().hex[:8]}"
    names = (f"{prefix}.messages", f"{prefix}.friendships")
    write_social(
        data,
        bootstrap=broker.bootstrap,
        messages_topic=names[0],
        friendships_topic=names[1],
        partitions=PARTITIONS,
    )
    return names


def _env(bootstrap: str, topics: tuple[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTREAM_")}
    env.update(
        RESTREAM_JOB_ID=f"fail-{uuid.uuid4().hex[:8]}",
        RESTREAM_PIPELINE="social-spam",
        RESTREAM_BOOTSTRAP_SERVERS=bootstrap,
        RESTREAM_INPUTS=f"{topics[0]}=message,{topics[1]}=friendship",
        RESTREAM_WORKERS="2",
        RESTREAM_EPOCH_SIZE="5000",
        RESTREAM_STALL_TIMEOUT=str(STALL),
        RESTREAM_PROGRESS="none",
        RESTREAM_LOG_FORMAT="json",
        RESTREAM_LOG_LEVEL="DEBUG",
    )
    env.update(extra)
    return env


def _start(env: dict[str, str], prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "connector.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


class _Lines:
    """The job's stderr, read by a thread: the pids it logs, and all of it at the end."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.pids: dict[str, int] = {}
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(
                r"(worker \d+) started: pid (\d+)|sink process (\d+) started"
                r"|sink process (\d+) of \d+ started: pid (\d+)",
                line,
            )
            if m and m.group(4):  # one of several sink processes: "sink 2"
                self.pids[f"sink {m.group(4)}"] = int(m.group(5))
            elif m:
                self.pids[m.group(1) or "sink"] = int(m.group(2) or m.group(3))
            if "epoch" in line and '"fields"' in line and "events_per_second" in line:
                self.started.set()

    def wait_for(self, name: str, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while name not in self.pids:
            assert time.monotonic() < deadline, f"{name} never started:\n{self.text()}"
            assert self.proc.poll() is None, f"the job ended first:\n{self.text()}"
            time.sleep(0.05)
        return self.pids[name]

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._thread.join(10)
        return code, self.text()

    def text(self) -> str:
        return "".join(self.lines)


def _one_clear_message(stderr: str, code: int, pattern: str) -> str:
    """The job's final line: one message matching ``pattern``, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    prefix = "restream: bad configuration: " if code == 2 else "restream: failed: "
    assert last.startswith(prefix), stderr
    assert re.search(pattern, last), last
    assert "SIGTERM" not in stderr, stderr  # no worker's copy of the run's SIGTERM handler
    return last


def _kill_in_the_replay(lines: _Lines, pid: int, pattern: str) -> None:
    """SIGKILL process ``pid`` of the job once it replays (worker 1 up, then a second): the
    job fails at once, within 4 s, exit code 1 and one clear message matching ``pattern``."""
    lines.wait_for("worker 1")
    time.sleep(1.0)  # into the replay
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    code, stderr = lines.finish()
    assert code == 1, stderr
    _one_clear_message(stderr, code, pattern)
    assert time.monotonic() - killed < 4.0


class _Pushgateway:
    """A stand-in Pushgateway that keeps what was pushed."""

    def __init__(self) -> None:
        bodies = self.bodies = []  # type: list[str]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                bodies.append(self.rfile.read(length).decode())
                self.send_response(200)
                self.end_headers()

            do_POST = do_PUT  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pushgateway() -> Iterator[_Pushgateway]:
    gateway = _Pushgateway()
    yield gateway
    gateway.close()


def _sample(body: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
    assert m, f"{name} not pushed:\n{body}"
    return float(m.group(1))


@pytest.mark.parametrize("victim", ["worker 1", "sink"])
def test_a_stopped_process_fails_the_job_within_the_stall_timeout(
    broker: LocalBroker, topics: tuple[str, str], victim: str, pushgateway: _Pushgateway
) -> None:
    proc = _start(_env(broker.bootstrap, topics, RESTREAM_PUSHGATEWAY=pushgateway.url))
    lines = _Lines(proc)
    pid = lines.wait_for(victim)
    lines.wait_for("worker 1")
    time.sleep(1.0)  # into the replay
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        code, stderr = lines.finish(timeout=STALL + 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # if the job left it behind
    took = time.monotonic() - stopped
    assert code == 1, stderr
    name = "the sink process" if victim == "sink" else victim
    last = _one_clear_message(
        stderr,
        code,
        rf"{name} \(pid {pid}\) made no progress for {STALL} s (in|while writing) epoch \d+ "
        r"\(seq \d+\.\.\d+\).*stopped \(SIGSTOP\?\)",
    )
    assert took < STALL + 4, (took, last)
    assert not running(pid)
    body = pushgateway.bodies[-1]
    assert _sample(body, "restream_job_success") == 0
    kind = "sink" if victim == "sink" else "worker"
    assert re.search(rf'^restream_stalls_total{{process="{kind}"}} 1\.0$', body, re.M), body


def test_a_killed_worker_is_reported_as_a_possible_oom_kill_at_once(
    broker: LocalBroker, topics: tuple[str, str], tmp_path: Path
) -> None:
    """With checkpoints (a SIGTERM handler in the coordinator): no false "SIGTERM:
    checkpointing" from a worker, and no wait for workers that ignore SIGTERM."""
    env = _env(broker.bootstrap, topics, RESTREAM_CHECKPOINT_DIR=str(tmp_path))
    lines = _Lines(_start(env))
    pid = lines.wait_for("worker 0")
    _kill_in_the_replay(
        lines,
        pid,
        rf"worker 0 \(pid {pid}\) was killed by SIGKILL \(out of memory\? its peak RSS was at "
        r"least [\d,]+ MiB",
    )


def test_a_killed_sink_process_among_several_fails_the_job_naming_it(
    broker: LocalBroker, topics: tuple[str, str]
) -> None:
    """With sink_processes 2 each owns one of the two output partitions; the death of one
    fails the run at once, naming it and its partition, and the other goes with the run."""
    lines = _Lines(_start(_env(broker.bootstrap, topics, RESTREAM_SINK_PROCESSES="2")))
    pid = lines.wait_for("sink 2")
    sibling = lines.wait_for("sink 1")
    _kill_in_the_replay(
        lines,
        pid,
        rf"the sink process 2 of 2 \(pid {pid}, output partitions \S+\.scores/1\) was killed "
        r"by SIGKILL \(out of memory\? its peak RSS was at least [\d,]+ MiB",
    )
    assert not running(sibling)


def test_an_unreachable_broker_fails_start_up_within_broker_timeout(
    topics: tuple[str, str], pushgateway: _Pushgateway
) -> None:
    env = _env(
        "127.0.0.1:1", topics, RESTREAM_BROKER_TIMEOUT="3", RESTREAM_PUSHGATEWAY=pushgateway.url
    )
    started = time.monotonic()
    code, stderr = _Lines(_start(env)).finish()
    assert code == 1, stderr
    _one_clear_message(stderr, code, r"cannot list the cluster's topics")
    assert time.monotonic() - started < 3 + 6
    # It failed before replaying, and the Pushgateway still hears of it.
    assert _sample(pushgateway.bodies[-1], "restream_job_success") == 0


def test_input_topics_gone_on_restart_are_named_before_outputs_are_created(
    broker: LocalBroker, topics: tuple[str, str], tmp_path: Path
) -> None:
    """A restarted job whose inputs are gone (a wiped cluster) names them and creates no
    output topic, instead of waiting for records that will never come."""
    gone = (f"gone-{uuid.uuid4().hex[:8]}.messages", f"gone-{uuid.uuid4().hex[:8]}.friendships")
    env = _env(broker.bootstrap, gone, RESTREAM_CHECKPOINT_DIR=str(tmp_path))
    config = load_config({}, environ=env)
    job = build_job(config)
    parts = fingerprint_parts(job)
    store = FileCheckpoints(tmp_path, job=job.job, every_epochs=1, every_seconds=60)
    ranges = tuple(PartitionRange(t, p, 0, 100, 0, 100) for t in gone for p in range(2))
    store.write_manifest(Manifest(job.job, fingerprint(parts), parts, ranges))
    code, stderr = _Lines(_start(env)).finish()
    assert code == 2, stderr
    last = _one_clear_message(stderr, code, r"restarted from its checkpoints, which pin")
    assert gone[0] in last and gone[1] in last
    from confluent_kafka.admin import AdminClient

    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert f"{job.job}.scores" not in listed
    assert f"{job.job}.lease" not in listed  # nor is the lease claimed (a write)


def _unshare() -> tuple[str, ...]:
    """A command prefix that runs its command in a private mount namespace, or skip."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) to make a volume full or read-only privately")
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private namespace here: {probe.stderr.decode().strip()}")
    return (unshare, "-rm", "sh", "-c", 'eval "$SETUP" && exec "$@"', "sh")


@pytest.mark.parametrize(
    ("case", "setup", "expected_code", "pattern"),
    [
        (
            "checkpoint volume full",
            'mount -t tmpfs -o size=16k tmpfs "$CKPT" && '
            'dd if=/dev/zero of="$CKPT/filler" bs=4k count=16 2>/dev/null; true',
            1,
            r"cannot write the job's manifest to .*: its volume is full \(No space left on "
            r"device\); make room",
        ),
        (
            "checkpoint volume read-only",
            'mount -t tmpfs -o ro tmpfs "$CKPT"',
            2,
            r"checkpoint_dir \(--checkpoint-dir, RESTREAM_CHECKPOINT_DIR\): cannot write the "
            r"job's checkpoint directory to .*: the volume is mounted read-only",
        ),
        (
            "/dev/shm full",
            "mount -t tmpfs -o size=8k tmpfs /dev/shm && "
            "dd if=/dev/zero of=/dev/shm/filler bs=4k count=2 2>/dev/null; true",
            1,
            r"no room for .* in /dev/shm \(No space left on device\)",
        ),
    ],
)
def test_full_or_read_only_volumes_at_start_are_one_clear_message(
    broker: LocalBroker,
    topics: tuple[str, str],
    tmp_path: Path,
    case: str,
    setup: str,
    expected_code: int,
    pattern: str,
) -> None:
    prefix = _unshare()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    env = _env(
        broker.bootstrap,
        topics,
        RESTREAM_CHECKPOINT_DIR=str(ckpt),
        CKPT=str(ckpt),
        SETUP=setup,
    )
    code, stderr = _Lines(_start(env, prefix)).finish()
    assert code == expected_code, (case, stderr)
    _one_clear_message(stderr, code, pattern)
