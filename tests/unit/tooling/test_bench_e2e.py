"""``restream bench e2e``'s per-stage table and JSON, from a run's times (no broker)."""

from __future__ import annotations

import json

import pytest

from connector.observability.metrics import STAGE_PREFIX
from tooling.bench_e2e import COORDINATOR_CPU, E2EResult, stages_of

SECONDS = {
    "read": 3.0,
    f"{STAGE_PREFIX}consume": 1.0,
    f"{STAGE_PREFIX}decode": 0.5,
    "move": 0.4,
    "merge": 0.2,
    "sink": 0.1,
    "phase 0": 1.0,
    "phase 1": 2.0,
    "op x": 0.7,
    "exchange": 0.3,
    "write": 4.0,
    f"{STAGE_PREFIX}write keys": 0.25,
    f"{STAGE_PREFIX}write headers": 0.5,
    f"{STAGE_PREFIX}write produce": 2.0,
    f"{STAGE_PREFIX}write flush": 1.0,
    f"{STAGE_PREFIX}write cpu": 1.5,
}


def test_stages_are_microseconds_per_input_event_or_output_record() -> None:
    rows = {(s.process, s.stage): s for s in stages_of(SECONDS, events=1_000_000, outputs=500_000)}
    assert rows[("coordinator", "consume")].us_per_record == pytest.approx(1.0)
    assert rows[("coordinator", "merge (log) and rest of read")].seconds == pytest.approx(1.5)
    assert rows[("workers (summed)", "compute (phases)")].us_per_record == pytest.approx(3.0)
    produce = rows[("sink", "produce calls")]
    assert (produce.per, produce.us_per_record) == ("record", pytest.approx(4.0))
    assert rows[("sink", "flush")].us_per_record == pytest.approx(2.0)
    # The sink's own CPU beside its wall times, which count waiting for a core too.
    assert rows[("sink", "CPU (all but flush)")].us_per_record == pytest.approx(3.0)
    # Not timed, not shown (a run without resume skips, say); operators are no stage.
    assert ("sink", "resume skip") not in rows
    assert not any("op" in stage.split() for _p, stage in rows)


def test_a_ray_run_with_readers_shows_the_driver_s_key_merge_cpu_and_the_readers() -> None:
    seconds = {
        "read": 1.0,
        f"{STAGE_PREFIX}consume": 0.0,
        f"{STAGE_PREFIX}decode": 0.0,
        "route": 0.5,
        f"{STAGE_PREFIX}reader consume": 0.75,
        f"{STAGE_PREFIX}reader decode": 1.25,
        "reader piece": 0.25,
        "assemble": 0.125,
    }
    seconds[COORDINATOR_CPU] = 0.875
    rows = {(s.process, s.stage): s for s in stages_of(seconds, events=1_000_000, outputs=0)}
    route = rows[("coordinator", "key merge and routing (CPU)")]
    assert route.us_per_record == pytest.approx(0.5)
    # The driver reads nothing: its read is a wait, its own CPU the whole process's.
    assert rows[("coordinator", "waiting for the readers' keys")].seconds == pytest.approx(1.0)
    assert ("coordinator", "consume") not in rows
    cpu = rows[("coordinator", "process CPU, all threads")]
    assert cpu.us_per_record == pytest.approx(0.875)
    assert rows[("readers (summed)", "consume")].us_per_record == pytest.approx(0.75)
    assert rows[("readers (summed)", "decode")].us_per_record == pytest.approx(1.25)
    assert rows[("readers (summed)", "cut pieces of epochs")].seconds == pytest.approx(0.25)
    assembled = rows[("workers (summed)", "assemble epochs from pieces")]
    assert assembled.seconds == pytest.approx(0.125)


def test_a_run_without_reader_timers_shows_its_read_whole() -> None:
    rows = stages_of({"read": 2.0}, events=100, outputs=0)
    assert [(s.stage, s.us_per_record) for s in rows[:1]] == [("read", pytest.approx(20_000.0))]


def test_the_table_and_json_carry_the_same_stages() -> None:
    result = E2EResult(
        events=1_000_000,
        outputs=500_000,
        consume_s=[1.0],
        produce_s=[1.0],
        native_produce_s=[0.25],
        native_consume_s=[0.5],
        e2e_s=[5.0],
        speedups=[10_000.0],
        breakdown=dict(SECONDS),
        run_outputs=500_000,
        output_headers="compact",
        output_writer="native",
        input_reader="librdkafka",
    )
    table = result.table()
    assert (
        "per stage in the last e2e run (output_headers compact, output_writer native, "
        "input_reader librdkafka)" in table
    )
    assert "produce calls" in table and "stage write" not in table
    data = json.loads(json.dumps(result.to_json()))
    assert data["ratio_to_consume_ceiling"] == pytest.approx(0.2)
    assert data["output_headers"] == "compact"
    assert data["output_writer"] == "native"
    assert data["input_reader"] == "librdkafka"
    assert data["records_per_second"]["produce_native"] == pytest.approx(2_000_000)
    assert data["records_per_second"]["consume_native"] == pytest.approx(2_000_000)
    assert "consume (native)        0.50     2,000,000       0.10" in table
    assert "produce (native)        0.25     2,000,000       0.05" in table
    stages = {(s["process"], s["stage"]): s for s in data["stages"]}
    assert stages[("sink", "headers")]["us_per_record"] == pytest.approx(1.0)
    assert len(stages) == len(result.stages())
