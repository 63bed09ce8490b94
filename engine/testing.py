"""Run a pipeline on in-memory events and get its records back: how rules are unit-tested.

Events are given per event kind, as a list of dicts (one per event) or as a dict of columns.
Each event needs ``ts`` (its event time, an int); ``partition`` (default 0) and ``offset``
(default: the row's position within its partition) are optional, every other key is a field.
Each kind is read as a topic of the kind's own name, so events of different kinds with equal
timestamps are ordered by kind name, then partition and offset, as in a replay (README, "How
events are ordered"). Example, as a pytest test::

    from engine import Pipeline, Record, Sliding
    from engine.testing import run_pipeline

    def test_second_payment_within_an_hour_alerts():
        p = Pipeline("cards")
        n = p.count("payments_1h", on="payment", key="card", window=Sliding(3_600_000))
        seen = p.lookup("n_1h", on="payment", table=n, key="card")
        out = p.output("alerts", key="card", fields=["card", "n"])
        p.emit(
            "alert",
            on="payment",
            output=out,
            inputs=[seen],
            fn=lambda e, _v: [Record(e.card, {"card": e.card, "n": e.n_1h})] if e.n_1h > 1 else [],
        )
        payments = [
            {"ts": 0, "card": "c1"},
            {"ts": 60_000, "card": "c2"},
            {"ts": 120_000, "card": "c1"},
            {"ts": 7_200_000, "card": "c1"},
        ]
        records = run_pipeline(p, {"payment": payments})
        assert records["alerts"] == [Record("c1", {"card": "c1", "n": 2})]

:func:`assert_executors_agree` runs the same events through every executor and checks that
their output bytes equal the serial oracle's: the test to write next to a ``batch_fn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from engine.errors import LogError
from engine.executors.factory import EXECUTOR_NAMES, ExecutorName, make_executor
from engine.log import InMemorySource, TopicTable
from engine.output import OutputChunk, canonical_bytes, collect
from engine.pipeline import Pipeline, Record
from engine.planner import plan

__all__ = ["EventsByKind", "assert_executors_agree", "run_pipeline"]

#: Per event kind: a list of events (dicts), or a dict of equally long columns.
EventsByKind: TypeAlias = Mapping[str, Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]]


def run_pipeline(
    pipeline: Pipeline,
    events: EventsByKind,
    *,
    executor: ExecutorName = "serial",
    workers: int | None = None,
    epoch_size: int | None = None,
) -> dict[str, list[Record]]:
    """The records ``pipeline`` writes for ``events``, per output, in serial order.

    Every output the pipeline declares is in the result (an empty list when nothing was
    written). Records carry exactly the fields their emit returned. ``executor``, ``workers``
    and ``epoch_size`` are those of :func:`~engine.executors.make_executor`; the outputs are
    the same whichever is chosen (small epochs exercise the epoch boundaries)."""
    chunks = _run(pipeline, events, executor, workers, epoch_size)
    out: dict[str, list[Record]] = {name: [] for name in pipeline.outputs}
    for chunk in chunks:
        out.setdefault(chunk.output, []).extend(Record(k, v) for k, v in chunk.records())
    return out


def assert_executors_agree(
    pipeline: Pipeline,
    events: EventsByKind,
    *,
    executors: Sequence[ExecutorName] = EXECUTOR_NAMES,
    workers: int = 2,
    epoch_size: int | None = None,
) -> dict[str, list[Record]]:
    """Run ``events`` through each of ``executors`` and raise :class:`AssertionError` naming
    the first record where one differs from the serial oracle; return the oracle's records.

    A mismatch means a ``batch_fn`` that disagrees with its ``fn`` (or an engine bug)."""
    oracle = _run(pipeline, events, "serial", None, epoch_size)
    expected = canonical_bytes(oracle)
    for name in executors:
        if name == "serial":
            continue
        chunks = _run(pipeline, events, name, workers if name == "parallel" else None, epoch_size)
        got = canonical_bytes(chunks)
        for output in sorted(set(expected) | set(got)):
            want_lines = expected.get(output, b"").split(b"\n")
            got_lines = got.get(output, b"").split(b"\n")
            if want_lines == got_lines:
                continue
            at = next(
                (i for i, (a, b) in enumerate(zip(want_lines, got_lines, strict=False)) if a != b),
                min(len(want_lines), len(got_lines)),
            )
            raise AssertionError(
                f"the {name} executor's output {output!r} differs from the serial oracle's at "
                f"record {at}: {_line(got_lines, at)} instead of {_line(want_lines, at)} (a "
                "batch_fn that disagrees with its fn?)"
            )
    return run_pipeline(pipeline, events, executor="serial", epoch_size=epoch_size)


def _line(lines: list[bytes], at: int) -> str:
    return lines[at].decode() if at < len(lines) else "no record"


def _run(
    pipeline: Pipeline,
    events: EventsByKind,
    executor: ExecutorName,
    workers: int | None,
    epoch_size: int | None,
) -> list[OutputChunk]:
    missing = [kind for kind in pipeline.kinds if kind not in events]
    if missing:
        raise LogError(
            f"no events given for kind(s) {missing} that the pipeline reads; pass [] for none"
        )
    tables = [TopicTable(kind, kind, _columns(kind, given)) for kind, given in events.items()]
    sink = collect()
    make_executor(executor, workers=workers, epoch_size=epoch_size).run(
        plan(pipeline), InMemorySource.from_tables(*tables), sink
    )
    return list(sink.chunks)


def _columns(
    kind: str, given: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]]
    if isinstance(given, Mapping):
        columns = {name: list(values) for name, values in given.items()}
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise LogError(f"the columns of kind {kind!r} differ in length: {lengths}")
    else:
        names = list(given[0]) if given else ["ts"]
        columns = {name: [] for name in names}
        for i, event in enumerate(given):
            if set(event) != set(names):
                raise LogError(
                    f"event {i} of kind {kind!r} has fields {sorted(event)}, the first one "
                    f"{sorted(names)}; give every event of a kind the same fields"
                )
            for name in names:
                columns[name].append(event[name])
    if "ts" not in columns:
        raise LogError(f"the events of kind {kind!r} lack 'ts' (their event time, an int)")
    rows = len(columns["ts"])
    columns.setdefault("partition", [0] * rows)
    return columns
