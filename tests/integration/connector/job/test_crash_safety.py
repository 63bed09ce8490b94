"""Crash-safe replay: killed, cut off and evicted jobs finish with output identical to an
uninterrupted run's (same records, order and partitions; no duplicates, no losses).

Each scenario runs `restream run` as a subprocess (the CLI a Kubernetes Job runs) over the same
500k+ events, with checkpoints, kills or disturbs it, restarts it with the same job id until it
exits 0, and compares every output partition and the dead-letter topic with the reference run,
record by record (key, value, headers but the job id; dead letters per input partition, whose
reads interleave differently from run to run). The input holds bad records throughout
(dead-lettered as the run goes) and every message writes two records to one output partition
(tests/support/crash_data.py), so a restart must skip within a seq.

A checkpoint's output must still be there when the job resumes from it: a topic deleted
between a kill and the restart is refused (exit 2) until ``--restart-from-scratch``.

The random kills and the kill between producing and checkpointing run in every
``output_headers`` mode; ``compact`` and ``none`` are compared on keys, values, partitions and
order (and ``compact`` on each record's seq), with fewer kills than ``full``. Some run with
the output written by two sink processes (``sink_processes`` 2), each at its own point when
killed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.output.headers import COMPACT, parse_compact
from engine.examples.social.data import generate_social
from engine.executors.arena import default_shm_dir
from tests.support.crash_data import PIPELINE_ENV, RECORDS_PER_MESSAGE, write_with_bad_records
from tooling.broker import LocalBroker
from tooling.tansu import TANSU_CLUSTER_ID, tansu_binary, wait_for_broker

pytestmark = pytest.mark.slow

EVENTS = 520_000
PARTITIONS = 3
#: A bad record after every this many messages of each input partition.
BAD_EVERY = 2_000
_ROOT = Path(__file__).resolve().parents[4]
Record = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]
Records = dict[int, list[Record]]


def _env(
    bootstrap: str, topics: tuple[str, str], job: str, ckpt: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTREAM_")}
    env.update(PIPELINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    env.update(
        RESTREAM_JOB_ID=job,
        RESTREAM_BOOTSTRAP_SERVERS=bootstrap,
        RESTREAM_INPUTS=f"{topics[0]}=message,{topics[1]}=friendship",
        RESTREAM_WORKERS="2",
        RESTREAM_EPOCH_SIZE="25000",
        RESTREAM_CHECKPOINT_DIR=str(ckpt),
        RESTREAM_CHECKPOINT_EVERY_EPOCHS="3",
        RESTREAM_PROGRESS="none",
        RESTREAM_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group: SIGKILL takes the workers too, like a pod
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def _header(name: str, value: bytes | None) -> tuple[str, bytes | None]:
    if name == "restream.source" and value is not None:
        # Without the input topic's run-specific prefix: the proxied tests write their own.
        return name, value.split(b".", 1)[-1]
    return name, value


def read_all(bootstrap: str, topic: str) -> Records:
    """Every record of ``topic`` to the end of each partition: key, value and headers but the
    job id."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restream-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 1,
        }
    )
    out: Records = {}
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        out = {p: [] for p in partitions}
        live = set(partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + 120
        while live and time.monotonic() < deadline:
            for m in consumer.consume(10_000, timeout=0.1):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        live.discard(m.partition() or 0)
                    continue
                headers = tuple(_header(k, v) for k, v in m.headers() or [] if k != "restream.job")
                out[m.partition() or 0].append((m.key(), m.value(), headers))  # type: ignore[arg-type]
        assert not live, f"{topic}: partitions {sorted(live)} never reached their end"
    finally:
        consumer.close()
    return out


class Data:
    def __init__(self, broker: LocalBroker) -> None:
        self.data = generate_social(
            users=20_000, events=EVENTS, days=10, seed=3, partitions=PARTITIONS
        )
        self.bad = 0
        self.topics = self.write(broker.bootstrap)

    def write(self, bootstrap: str) -> tuple[str, str]:
        prefix = f"crash-{uuid.uuid4().hex[:8]}"
        topics = (f"{prefix}.messages", f"{prefix}.friendships")
        self.bad = write_with_bad_records(
            self.data, bootstrap=bootstrap, topics=topics, partitions=PARTITIONS, every=BAD_EVERY
        )
        return topics


class Output:
    """A job's output topic and dead-letter topic, read back."""

    def __init__(self, bootstrap: str, job: str) -> None:
        self.scores = read_all(bootstrap, f"{job}.scores")
        self.dead_letters = read_all(bootstrap, f"{job}.dead-letter")


@pytest.fixture(scope="module")
def data(broker: LocalBroker) -> Data:
    return Data(broker)


@pytest.fixture(scope="module")
def reference(broker: LocalBroker, data: Data, tmp_path_factory: pytest.TempPathFactory) -> Output:
    job = f"ref-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path_factory.mktemp("ref"))
    code, out = _finish(_start(env))
    assert code == 0, out
    output = Output(broker.bootstrap, job)
    scores = sum(map(len, output.scores.values()))
    assert scores == RECORDS_PER_MESSAGE * len(data.data.messages)
    assert sum(map(len, output.dead_letters.values())) == data.bad > 0
    # Several records of one seq in a partition: a resume must skip part of a seq.
    for records in output.scores.values():
        seqs = [dict(h)["restream.seq"] for _k, _v, h in records]
        assert len(set(seqs)) < len(seqs)
    return output


def _by_source(records: Records) -> dict[tuple[int, bytes], list[Record]]:
    """Dead letters per (dead-letter partition, input partition), in order.

    Dead letters are written in read order, and how the reads of different input partitions
    interleave varies from run to run (and with every restart): only each input partition's
    order is the same every time."""
    out: dict[tuple[int, bytes], list[Record]] = {}
    for p, rows in records.items():
        for row in rows:
            source = dict(row[2])["restream.source"] or b""
            out.setdefault((p, source.rpartition(b"@")[0]), []).append(row)
    return out


def _in_mode(records: Records, mode: str) -> Records:
    """Records as a run in header ``mode`` writes them: a full run's seq as compact's says it
    (without the job id, which differs from run to run), no headers for none."""
    out: Records = {}
    for p, rows in records.items():
        out[p] = []
        for key, value, headers in rows:
            named = dict(headers)
            if mode == "compact":
                seq = named.get("restream.seq")
                if seq is None:
                    packed = parse_compact(named[COMPACT] or b"")
                    assert packed is not None
                    seq = str(packed[0]).encode()
                out[p].append((key, value, (("restream.seq", seq),)))
            else:
                out[p].append((key, value, ()))
    return out


def _assert_same(bootstrap: str, job: str, reference: Output, mode: str = "full") -> None:
    got = Output(bootstrap, job)
    scores, expected = got.scores, reference.scores
    if mode != "full":
        if mode == "none":
            assert all(h == () for rows in scores.values() for _k, _v, h in rows)
        else:
            assert all([k for k, _ in h] == [COMPACT] for rows in scores.values() for *_, h in rows)
        scores, expected = _in_mode(scores, mode), _in_mode(expected, mode)
    for what, mine, theirs in (
        ("scores", scores, expected),
        ("dead letters", _by_source(got.dead_letters), _by_source(reference.dead_letters)),
    ):
        assert set(mine) == set(theirs), what
        for p in theirs:
            assert len(mine[p]) == len(theirs[p]), f"{what} {p}: {len(mine[p])} records"
            assert mine[p] == theirs[p], f"{what} partition {p} differs"


def _checkpoints(ckpt: Path, job: str) -> list[Path]:
    return sorted((ckpt / job).glob("ckpt-*.snap"))


def _wait_for_output(
    proc: subprocess.Popen[bytes], bootstrap: str, topic: str, timeout: float = 120
) -> None:
    """Return once ``topic`` holds a record, so a disturbance lands mid-run however fast the
    machine is (a fixed delay can come after a fast machine has finished)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the job ended before writing any output"
            topics = consumer.list_topics(timeout=5).topics
            if topic in topics:
                partitions = topics[topic].partitions
                ends = (
                    consumer.get_watermark_offsets(TopicPartition(topic, p), 5) for p in partitions
                )
                if any(high > 0 for _low, high in ends):
                    return
            time.sleep(0.05)
    finally:
        consumer.close()
    pytest.fail(f"no output in {topic} after {timeout} s")


def _wait_for_new_checkpoint(
    proc: subprocess.Popen[bytes], ckpt: Path, job: str, after: Path | None, timeout: float = 120
) -> Path | None:
    """The first snapshot newer than ``after`` written by ``proc``; None if it exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        newest = _checkpoints(ckpt, job)[-1:] or [None]
        if newest[0] is not None and (after is None or newest[0].name > after.name):
            return newest[0]
        time.sleep(0.02)
    return None


#: Per header mode, the kills of the random-kill test: the default mode thoroughly, the
#: others (the same resume logic for compact, a count from the marks for none) more briefly.
KILLS = {"full": 3, "compact": 2, "none": 2}


@pytest.mark.parametrize(
    ("mode", "sinks"), [*((mode, 1) for mode in KILLS), ("full", 2), ("none", 2)]
)
def test_sigkill_at_random_points_then_resume(
    broker: LocalBroker, data: Data, reference: Output, tmp_path: Path, mode: str, sinks: int
) -> None:
    # Each kill lands a random moment after the attempt's first new checkpoint: the attempt has
    # made progress (a fixed delay is too late on a fast machine, where a resumed job finishes
    # before it), and the kill falls anywhere between, or inside, the next checkpoints. With 21
    # epochs and a checkpoint every 3, three kills leave at least 12 epochs to the end.
    # With sinks 2 the output's three partitions are written by two sink processes: a kill
    # leaves each at its own point, and the resume must find each partition's.
    job = f"kill-{uuid.uuid4().hex[:8]}"
    env = _env(
        broker.bootstrap,
        data.topics,
        job,
        tmp_path,
        RESTREAM_OUTPUT_HEADERS=mode,
        RESTREAM_SINK_PROCESSES=str(sinks),
    )
    rng = random.Random(1234 + len(mode) + 100 * sinks)
    want = KILLS[mode]
    kills = 0
    newest: Path | None = None
    for _attempt in range(8):
        proc = _start(env)
        if kills < want:
            newest = _wait_for_new_checkpoint(proc, tmp_path, job, newest)
            time.sleep(rng.uniform(0.0, 0.6))
            if newest is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                kills += 1
                continue
        code, out = _finish(proc)
        assert code == 0, out
        break
    else:
        pytest.fail("the job never finished")
    assert kills == want, f"the job finished after {kills} kills: it outran the kill points"
    _assert_same(broker.bootstrap, job, reference, mode)


@pytest.mark.parametrize(
    ("failpoint", "mode", "sinks"),
    [
        ("checkpoint.write:2", "full", 1),
        ("checkpoint.flushed:2", "full", 1),
        ("sink.epoch:7", "full", 1),
        ("checkpoint.flushed:2", "none", 1),
        ("sink.epoch:7", "compact", 1),
        ("sink.epoch:7", "none", 1),
        # Each of two sink processes reaches its 7th epoch: the first to get there kills.
        ("sink.epoch:7", "none", 2),
    ],
)
def test_killed_inside_a_checkpoint_or_between_produce_and_checkpoint(
    broker: LocalBroker,
    data: Data,
    reference: Output,
    tmp_path: Path,
    failpoint: str,
    mode: str,
    sinks: int,
) -> None:
    job = f"fp-{uuid.uuid4().hex[:8]}"
    env = _env(
        broker.bootstrap,
        data.topics,
        job,
        tmp_path,
        RESTREAM_OUTPUT_HEADERS=mode,
        RESTREAM_SINK_PROCESSES=str(sinks),
    )
    code, out = _finish(_start({**env, "RESTREAM_FAILPOINTS": failpoint}))
    assert code == -signal.SIGKILL, out
    code, out = _finish(_start(env))
    assert code == 0, out
    assert '"resumed"' in out or "resuming from checkpoint" in out
    if failpoint.startswith("sink.epoch"):
        # Killed after producing past its checkpoint: the restart must skip those records.
        assert "records already in the output not written again" in out, out
    _assert_same(broker.bootstrap, job, reference, mode)


def test_sigterm_checkpoints_and_stops_then_resumes(
    broker: LocalBroker, data: Data, reference: Output, tmp_path: Path
) -> None:
    job = f"term-{uuid.uuid4().hex[:8]}"
    env = _env(
        broker.bootstrap, data.topics, job, tmp_path, RESTREAM_CHECKPOINT_EVERY_EPOCHS="1000"
    )
    proc = _start(env)
    _wait_for_output(proc, broker.bootstrap, f"{job}.scores")
    proc.send_signal(signal.SIGTERM)  # the main process only, as the kubelet does
    code, out = _finish(proc, timeout=60)
    assert code == 1, out
    assert "stopped on request after a checkpoint" in out
    assert len(_checkpoints(tmp_path, job)) == 1
    code, out = _finish(_start(env))
    assert code == 0, out
    _assert_same(broker.bootstrap, job, reference)


def test_ctrl_c_stops_every_process_of_the_run_and_leaves_nothing(
    broker: LocalBroker, data: Data, tmp_path: Path
) -> None:
    job = f"int-{uuid.uuid4().hex[:8]}"
    proc = _start(_env(broker.bootstrap, data.topics, job, tmp_path))
    _wait_for_output(proc, broker.bootstrap, f"{job}.scores")
    # Everything the run started: two workers and the sink process, all in its group.
    members = _group_members(proc.pid)
    assert len(members) >= 3, members
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground group
    code, out = _finish(proc, timeout=30)
    assert code == 1 and "restream: interrupted" in out, out
    deadline = time.monotonic() + 10
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_members(proc.pid), "processes of the run outlived it"
    assert not list(default_shm_dir().glob(f"restream-{proc.pid}-*")), "run files left behind"


def _group_members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_a_damaged_checkpoint_is_skipped_for_the_previous_one(
    broker: LocalBroker, data: Data, reference: Output, tmp_path: Path
) -> None:
    job = f"dmg-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path, RESTREAM_CHECKPOINT_EVERY_EPOCHS="2")
    code, out = _finish(_start({**env, "RESTREAM_FAILPOINTS": "sink.epoch:9"}))
    assert code == -signal.SIGKILL, out
    snaps = _checkpoints(tmp_path, job)
    assert len(snaps) == 2
    snaps[-1].write_bytes(snaps[-1].read_bytes()[:1000])  # truncated
    code, out = _finish(_start(env))
    assert code == 0, out
    assert "skipping checkpoint" in out
    _assert_same(broker.bootstrap, job, reference)


def test_a_native_crash_in_the_sink_process_fails_the_job_with_its_stacks_and_resumes(
    broker: LocalBroker, data: Data, reference: Output, tmp_path: Path
) -> None:
    """A segmentation fault (a bug in native code) in the sink process: the job exits 1
    naming the dead sink process, the log holds the crashed thread's Python stack (so the
    place can be found), and the rerun resumes to the same output."""
    job = f"segv-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path)
    code, out = _finish(_start({**env, "RESTREAM_FAILPOINTS": "sink.epoch:3:segv"}))
    assert code == 1, out
    assert "Fatal Python error: Segmentation fault" in out, out
    assert "sink_process.py" in out.split("Fatal Python error", 1)[1], out
    assert "restream: failed:" in out and "sink process" in out, out
    # Nothing of the scores may have been delivered, but the failed run flushed its dead
    # letters on the way out: the rerun must not write them again.
    code, out = _finish(_start(env))
    assert code == 0, out
    _assert_same(broker.bootstrap, job, reference)


def test_a_checkpoint_of_other_settings_is_refused(
    broker: LocalBroker, data: Data, tmp_path: Path
) -> None:
    job = f"fpr-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path)
    code, out = _finish(_start({**env, "RESTREAM_FAILPOINTS": "sink.epoch:4"}))
    assert code == -signal.SIGKILL, out
    code, out = _finish(_start({**env, "RESTREAM_EPOCH_SIZE": "30000"}))
    assert code == 2, out
    assert "different settings (changed: epoch_size was 25000, now 30000)" in out
    # The header mode is one of them: a resume would find its place by the wrong headers.
    code, out = _finish(_start({**env, "RESTREAM_OUTPUT_HEADERS": "none"}))
    assert code == 2, out
    assert "different settings (changed: output_headers" in out, out


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed after its deletion"
        time.sleep(0.1)


@pytest.mark.parametrize("lost", ["scores", "dead-letter"])
def test_a_topic_deleted_between_kill_and_restart_is_refused_until_started_over(
    broker: LocalBroker, data: Data, reference: Output, tmp_path: Path, lost: str
) -> None:
    job = f"lost-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path)
    proc = _start(env)
    # Killed (the whole process group, like a pod) after its second checkpoint, whose output
    # and dead letters are in the topics.
    first = _wait_for_new_checkpoint(proc, tmp_path, job, None)
    assert _wait_for_new_checkpoint(proc, tmp_path, job, first) is not None, "no 2nd checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    topic = f"{job}.{lost}"
    _delete_topic(broker.bootstrap, topic)
    for _rerun in range(2):  # a rerun is refused the same way: nothing was created or written
        code, out = _finish(_start(env))
        assert code == 2, out
        assert f"job {job} cannot resume from its checkpoint at seq" in out, out
        assert f"topic {topic} is missing; it held this job's records in partitions" in out, out
        assert "--restart-from-scratch" in out and "new job id" in out, out
        assert "Traceback" not in out, out
        assert (
            topic
            not in AdminClient({"bootstrap.servers": broker.bootstrap})
            .list_topics(timeout=10)
            .topics
        )
    assert _checkpoints(tmp_path, job), "a refused restart must leave the checkpoints"
    code, out = _finish(_start(env, "--restart-from-scratch"))
    assert code == 0, out
    assert "starts over; deleted topics" in out, out
    assert "resuming from checkpoint" not in out, out
    _assert_same(broker.bootstrap, job, reference)


class Proxy:
    """A TCP proxy that can drop every connection and refuse new ones for a while."""

    def __init__(self, listen: int, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", listen))
        self.conns: list[socket.socket] = []
        self.down = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxied() -> Iterator[tuple[str, Proxy]]:
    """A Tansu broker that advertises the proxy's address, and the proxy."""
    broker_port, proxy_port = _free_port(), _free_port()
    command = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{broker_port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{proxy_port}",
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        TANSU_CLUSTER_ID,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = Proxy(proxy_port, broker_port)
    try:
        wait_for_broker(f"127.0.0.1:{proxy_port}", 30)
        yield f"127.0.0.1:{proxy_port}", proxy
    finally:
        proxy.close()
        process.terminate()
        process.wait(10)


def test_broker_connection_cut_and_restored_mid_run(
    proxied: tuple[str, Proxy], data: Data, reference: Output, tmp_path: Path
) -> None:
    bootstrap, proxy = proxied
    topics = data.write(bootstrap)
    job = f"cut-{uuid.uuid4().hex[:8]}"
    proc = _start(_env(bootstrap, topics, job, tmp_path))
    _wait_for_output(proc, bootstrap, f"{job}.scores")
    for _ in range(2):
        proxy.cut()
        time.sleep(3)
        proxy.restore()
        time.sleep(2.5)
    code, out = _finish(proc)
    assert code == 0, out
    _assert_same(bootstrap, job, reference)


def test_a_broker_that_stays_away_fails_the_job_after_the_deadline(
    proxied: tuple[str, Proxy], data: Data, tmp_path: Path
) -> None:
    bootstrap, proxy = proxied
    topics = data.write(bootstrap)
    job = f"gone-{uuid.uuid4().hex[:8]}"
    proc = _start(_env(bootstrap, topics, job, tmp_path, RESTREAM_BROKER_TIMEOUT="8"))
    _wait_for_output(proc, bootstrap, f"{job}.scores")
    proxy.cut()
    began = time.monotonic()
    code, out = _finish(proc, timeout=120)
    assert code == 1, out
    assert time.monotonic() - began < 60
