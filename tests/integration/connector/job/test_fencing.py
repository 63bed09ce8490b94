"""Fencing: two runs of one job id never both write (connector/job/lease.py).

Each scenario runs `restream run` as subprocesses (what a Kubernetes Job runs), each with a
checkpoint directory of its own (fencing must not rely on a shared one), and compares every
output partition with an uninterrupted run's, record by record: never a duplicate, never a gap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from engine.examples.social.data import generate_social
from tooling.broker import LocalBroker
from tooling.generate import write_social

pytestmark = pytest.mark.slow

# Long enough that a run started mid-way is refused (after its own start-up and the holder's
# next renewal) before the first run ends: with the native producer a run of 300,000 events
# once ended first in CI.
EVENTS = 1_000_000
PARTITIONS = 3
LEASE_TIMEOUT = 10
Records = dict[int, list[tuple[bytes | None, bytes | None, bytes | None]]]


def _env(bootstrap: str, topics: tuple[str, str], job: str, ckpt: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTREAM_")}
    env.update(
        RESTREAM_JOB_ID=job,
        RESTREAM_PIPELINE="social-spam",
        RESTREAM_BOOTSTRAP_SERVERS=bootstrap,
        RESTREAM_INPUTS=f"{topics[0]}=message,{topics[1]}=friendship",
        RESTREAM_WORKERS="1",
        # Small epochs: a run lasts long enough to be disturbed mid-way.
        RESTREAM_EPOCH_SIZE="5000",
        RESTREAM_CHECKPOINT_DIR=str(ckpt),
        RESTREAM_LEASE_TIMEOUT=str(LEASE_TIMEOUT),
        RESTREAM_PROGRESS="none",
        RESTREAM_LOG_FORMAT="json",
    )
    return env


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a process group, like a pod
    )


def _finish(proc: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def read_all(bootstrap: str, topic: str) -> Records:
    """Every record of ``topic`` to the end of each partition: (key, value, seq header)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restream-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 1,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        out: Records = {p: [] for p in partitions}
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
                seq = dict(m.headers() or []).get("restream.seq")
                out[m.partition() or 0].append((m.key(), m.value(), seq))  # type: ignore[arg-type]
        assert not live, f"{topic}: partitions {sorted(live)} never reached their end"
    finally:
        consumer.close()
    return out


def _output_records(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        topics = consumer.list_topics(timeout=5).topics
        if topic not in topics:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), 5)[1]
            for p in topics[topic].partitions
        )
    finally:
        consumer.close()


def _wait_for_output(proc: subprocess.Popen[bytes], bootstrap: str, topic: str) -> None:
    """Return once ``topic`` holds records, so that a disturbance lands mid-run."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before writing any output"
        if _output_records(bootstrap, topic) > 0:
            return
        time.sleep(0.05)
    pytest.fail(f"no output in {topic} after 120 s")


class Data:
    def __init__(self, broker: LocalBroker) -> None:
        self.data = generate_social(
            users=20_000, events=EVENTS, days=10, seed=5, partitions=PARTITIONS
        )
        prefix = f"fence-{uuid.uuid4().hex[:8]}"
        self.topics = (f"{prefix}.messages", f"{prefix}.friendships")
        write_social(
            self.data,
            bootstrap=broker.bootstrap,
            messages_topic=self.topics[0],
            friendships_topic=self.topics[1],
            partitions=PARTITIONS,
        )


@pytest.fixture(scope="module")
def data(broker: LocalBroker) -> Data:
    return Data(broker)


@pytest.fixture(scope="module")
def reference(broker: LocalBroker, data: Data, tmp_path_factory: pytest.TempPathFactory) -> Records:
    job = f"ref-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path_factory.mktemp("ref"))
    code, out = _finish(_start(env))
    assert code == 0, out
    records = read_all(broker.bootstrap, f"{job}.scores")
    assert sum(map(len, records.values())) == len(data.data.messages)
    return records


def _assert_same(got: Records, reference: Records) -> None:
    assert set(got) == set(reference)
    for p in reference:
        seqs = [seq for _k, _v, seq in got[p]]
        assert len(seqs) == len(set(seqs)), f"partition {p}: duplicated records"
        assert len(got[p]) == len(reference[p]), f"partition {p}: {len(got[p])} records"
        assert got[p] == reference[p], f"partition {p} differs"


def _refusal(out: str, job: str) -> None:
    assert f"restream: refused: another run of job {job} is live since " in out, out
    assert "wait for it or stop it" in out, out
    assert "Traceback" not in out, out


def test_two_runs_started_together_one_writes_the_other_is_refused(
    broker: LocalBroker, data: Data, reference: Records, tmp_path: Path
) -> None:
    job = f"twin-{uuid.uuid4().hex[:8]}"
    procs = [_start(_env(broker.bootstrap, data.topics, job, tmp_path / str(i))) for i in (1, 2)]
    results = [_finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    _refusal(next(out for code, out in results if code == 2), job)
    _assert_same(read_all(broker.bootstrap, f"{job}.scores"), reference)


def test_a_run_started_mid_run_is_refused_and_the_first_is_unharmed(
    broker: LocalBroker, data: Data, reference: Records, tmp_path: Path
) -> None:
    job = f"mid-{uuid.uuid4().hex[:8]}"
    first = _start(_env(broker.bootstrap, data.topics, job, tmp_path / "first"))
    _wait_for_output(first, broker.bootstrap, f"{job}.scores")
    began = time.monotonic()
    code, out = _finish(_start(_env(broker.bootstrap, data.topics, job, tmp_path / "second")))
    assert code == 2, out
    _refusal(out, job)
    # Refused at the holder's next renewal (every lease_timeout / 6 s), not after the lease.
    assert time.monotonic() - began < LEASE_TIMEOUT + 5
    assert first.poll() is None, "the first run ended before the second was refused"
    code, out = _finish(first)
    assert code == 0, out
    _assert_same(read_all(broker.bootstrap, f"{job}.scores"), reference)


@pytest.mark.parametrize("sinks", [1, 2])
def test_a_stopped_run_is_taken_over_and_fenced_when_it_continues(
    broker: LocalBroker, data: Data, reference: Records, tmp_path: Path, sinks: int
) -> None:
    # A run whose coordinator hangs (SIGSTOP) stops renewing its lease; a retry takes the job
    # over after lease_timeout and resumes from what the output holds. The stopped run,
    # continued while the retry writes, must write nothing more and exit 2. (A freeze of the
    # whole pod is not covered: see "Fencing" in the README.)
    job = f"stop-{uuid.uuid4().hex[:8]}"
    topic = f"{job}.scores"
    # With sinks 2 the lease gate must hold in each of the two sink processes.
    environ = {"RESTREAM_SINK_PROCESSES": str(sinks)}
    frozen = _start({**_env(broker.bootstrap, data.topics, job, tmp_path / "frozen"), **environ})
    _wait_for_output(frozen, broker.bootstrap, topic)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        # Its sink process writes the epoch it holds, then nothing comes.
        before, settled = -1, time.monotonic()
        while time.monotonic() - settled < 1.5:
            now = _output_records(broker.bootstrap, topic)
            if now != before:
                before, settled = now, time.monotonic()
            time.sleep(0.1)
        retry = _start({**_env(broker.bootstrap, data.topics, job, tmp_path / "retry"), **environ})
        # Continue the stopped run once the retry is writing.
        deadline = time.monotonic() + 120
        while _output_records(broker.bootstrap, topic) <= before:
            assert retry.poll() is None, _finish(retry)[1]
            assert time.monotonic() < deadline, "the retry never wrote"
            time.sleep(0.05)
        assert time.monotonic() - stopped_at >= LEASE_TIMEOUT
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    code, out = _finish(frozen)
    assert code == 2, out
    assert f"restream: refused: another run of job {job} took over its lease" in out, out
    code, out = _finish(retry)
    assert code == 0, out
    assert "taking over" in out, out
    _assert_same(read_all(broker.bootstrap, topic), reference)


def test_a_killed_runs_retry_on_the_same_machine_starts_at_once(
    broker: LocalBroker, data: Data, reference: Records, tmp_path: Path
) -> None:
    job = f"kill-{uuid.uuid4().hex[:8]}"
    env = _env(broker.bootstrap, data.topics, job, tmp_path)
    killed = _start(env)
    _wait_for_output(killed, broker.bootstrap, f"{job}.scores")
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(30)
    began = time.monotonic()
    code, out = _finish(_start(env))
    assert code == 0, out
    assert "is gone from this machine; taking over" in out, out
    assert "sign of life" not in out, out  # it did not wait for the lease to run out
    _assert_same(read_all(broker.bootstrap, f"{job}.scores"), reference)
    assert time.monotonic() - began < 120
