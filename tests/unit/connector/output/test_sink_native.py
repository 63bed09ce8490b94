"""The sink through the native producer writes what it writes through librdkafka: the same
records (key, value, timestamp, headers) in the same order in every partition, in every
header mode, with and without a resume skip."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.config import OutputHeaders
from connector.kafka.native import NativeProducer
from connector.output.headers import HEADER_MODES
from connector.output.sink import KafkaSink, ResumePoint, key_partitions
from engine.output import OutputChunk
from tests.support.budget import examples
from tests.support.fake_broker import FakeBroker
from tests.support.sink_fakes import recording_sink, repr_target, source_epoch

PARTITIONS = 4


_keys = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=40).map(
        lambda ks: np.array(ks, dtype=np.int64)
    ),
    st.lists(st.text(max_size=6), min_size=1, max_size=40).map(
        lambda ks: np.array(ks, dtype=object)
    ),
)


@given(
    keys=_keys,
    gaps=st.lists(st.integers(0, 2), min_size=40, max_size=40),
    mode=st.sampled_from(HEADER_MODES),
    resume_at=st.one_of(st.none(), st.tuples(st.integers(0, PARTITIONS - 1), st.integers(0, 60))),
)
@settings(max_examples=examples(200), deadline=None)
def test_the_native_path_writes_what_librdkafka_is_given(
    keys: np.ndarray,
    gaps: list[int],
    mode: OutputHeaders,
    resume_at: tuple[int, int] | None,
) -> None:
    n = len(keys)
    seq = np.cumsum(np.array(gaps[:n])) + 3  # repeated seq: one event, several records
    chunk = OutputChunk("s", seq, keys, {"a": np.arange(n) * 3})
    epoch = source_epoch(0, int(seq[-1]) + 1, topics=("social.messages", "in"))
    resume = {} if resume_at is None else {("out", resume_at[0]): ResumePoint(resume_at[1], 1)}
    target = {"s": repr_target("s", "out", PARTITIONS)}

    listed, recorded = recording_sink(target, resume=resume, headers=mode)
    listed.write([chunk], epoch)

    broker = FakeBroker()
    producer = NativeProducer(broker.leaders(PARTITIONS), timeout_s=10)
    native = KafkaSink(lambda: producer, target, job="j1", resume=resume, headers=mode)
    native.write([chunk], epoch)
    producer.flush()
    producer.close()
    broker.close()

    assert native.written == listed.written and native.skipped == listed.skipped
    assert native.last_seq == listed.last_seq
    for p in range(PARTITIONS):
        want = [r for r in recorded.rows if r.partition == p]
        got = broker.records("out", p)
        assert [r.key for r in got] == [r.key for r in want]
        assert [r.value for r in got] == [r.value for r in want]
        assert [r.timestamp for r in got] == [r.timestamp for r in want]
        assert [[(k.decode(), v) for k, v in r.headers] for r in got] == [r.headers for r in want]
    assert set(key_partitions(keys, PARTITIONS).tolist()) >= {r.partition for r in recorded.rows}
