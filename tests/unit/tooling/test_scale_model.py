"""``restream bench scale``: the projection's arithmetic, the report it accepts, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.cli.app import main
from connector.errors import ConfigError
from tooling.scale_model import Costs, EpochShape, costs_from_report, measure_epoch, project


def _report(executor: str = "ray") -> dict[str, object]:
    def stage(process: str, stage: str, us: float, per: str = "event") -> dict[str, object]:
        return {"process": process, "stage": stage, "seconds": 1.0, "per": per, "us_per_record": us}

    return {
        "events": 1_000_000,
        "outputs": 500_000,
        "executor": executor,
        "workers": 2,
        "stages": [
            stage("coordinator", "process CPU, all threads", 0.5),
            stage("coordinator", "key merge and routing (CPU)", 0.125),
            stage("readers (summed)", "consume", 1.0),
            stage("readers (summed)", "decode", 1.5),
            stage("readers (summed)", "cut pieces of epochs", 0.5),
            stage("workers (summed)", "compute (phases)", 4.0),
            stage("sink", "keys and partitioning", 0.5, "record"),
            stage("sink", "produce calls", 1.5, "record"),
            stage("sink", "write (all but flush)", 2.0, "record"),
        ],
    }


def test_costs_are_read_from_a_ray_report() -> None:
    costs = costs_from_report(_report())
    assert costs == Costs(
        driver=0.5, readers=3.0, compute=4.0, sink_per_record=2.0, records_per_event=0.5
    )


def test_a_report_of_another_executor_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--report: .*--executor ray"):
        costs_from_report(_report("parallel"))


def test_each_limit_and_the_bottleneck() -> None:
    costs = Costs(driver=0.5, readers=3.0, compute=4.0, sink_per_record=2.0, records_per_event=0.5)
    shape = EpochShape(bytes_per_event=125.0, assemble_us=0.01, readers=4)
    one = project(costs, shape, nodes=1, cores=16, sink_processes=3, nic_gbit=10)
    assert one.workers == 16
    assert one.limits["driver"] == pytest.approx(2_000_000)
    assert one.limits["sink"] == pytest.approx(3_000_000)
    assert one.limits["cores"] == pytest.approx(12 * 1e6 / (7.0 + 16 * 0.01))
    assert one.limits["network"] == pytest.approx(10_000_000)
    assert one.bottleneck == "cores"
    # Many nodes: the one driver process sets the rate.
    many = project(costs, shape, nodes=8, cores=16, sink_processes=3, nic_gbit=10)
    assert many.bottleneck == "driver" and many.events_per_second == pytest.approx(2_000_000)


def test_sink_actors_scale_the_sink_with_the_nodes() -> None:
    """With sink actors every node writes its share: the sink limit grows with the nodes,
    each node's actors take cores, and a node receives its share of the output."""
    costs = Costs(driver=0.5, readers=3.0, compute=4.0, sink_per_record=2.0, records_per_event=0.5)
    shape = EpochShape(
        bytes_per_event=125.0, assemble_us=0.01, readers=4, output_bytes_per_record=100.0
    )
    four = project(costs, shape, nodes=4, cores=16, sink_processes=3, nic_gbit=10, sink_actors=2)
    assert four.limits["sink"] == pytest.approx(8 * 1e6 / 1.0)
    assert four.limits["cores"] == pytest.approx((64 - 1 - 8) * 1e6 / (7.0 + 64 * 0.01))
    assert four.limits["network"] == pytest.approx(10e9 / 8 / (125.0 + 50.0 / 4))
    # Sink processes on the driver's node: that node receives the whole output.
    driver_node = project(costs, shape, nodes=4, cores=16, sink_processes=3, nic_gbit=10)
    assert driver_node.limits["sink"] == pytest.approx(3e6)
    assert driver_node.limits["network"] == pytest.approx(10e9 / 8 / (125.0 + 50.0))


def test_the_sinks_cpu_is_preferred_to_its_wall_times() -> None:
    report = _report()
    stages = report["stages"]
    assert isinstance(stages, list)
    stages.append(
        {
            "process": "sink",
            "stage": "CPU (all but flush)",
            "seconds": 1.0,
            "per": "record",
            "us_per_record": 1.25,
        }
    )
    assert costs_from_report(report).sink_per_record == 1.25


def test_the_epoch_is_measured_over_several_readers() -> None:
    shape = measure_epoch(3, events=20_000, repeat=1)
    assert shape.readers == 3
    # Timestamps, kinds, keys and the message columns: tens of bytes an event.
    assert 20 < shape.bytes_per_event < 400
    assert shape.assemble_us > 0
    # The spam scores: seq, key and eight fields of at most 8 bytes.
    assert 40 < shape.output_bytes_per_record <= 80


def test_the_command_prints_a_row_per_size_and_refuses_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "ray.json"
    report.write_text(json.dumps(_report()))
    assert main(["bench", "scale", "--report", str(report), "--nodes", "1,4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["nodes", "workers", "events/s", "bottleneck"]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "4"]
    assert main(["bench", "scale", "--report", str(report), "--nodes", "0"]) == 2
    assert "--nodes: counts must be >= 1" in capsys.readouterr().err
    assert main(["bench", "scale", "--report", str(tmp_path / "none.json")]) == 2
