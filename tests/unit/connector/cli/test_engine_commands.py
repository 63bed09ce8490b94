"""The ``restream bench engine`` report: ratios, scaling and RSS lines from measurements;
``restream bench lateness``: its settings and what it shows."""

from __future__ import annotations

import pytest

from connector.cli.app import main
from connector.cli.engine_commands import format_table, parse_latenesses
from engine.benchmark import BenchResult, Measurement
from engine.examples.social.data import generate_social
from engine.examples.social.lateness import measure_lateness, window_pipeline
from engine.examples.social.source import social_source
from engine.executors.batch import BatchExecutor
from engine.executors.serial import SerialExecutor
from engine.output import canonical_bytes, collect
from engine.planner import plan
from tests.support.budget import size


def _result() -> BenchResult:
    def m(name: str, seconds: float, digest: str = "d", rss: float = 100.0) -> Measurement:
        return Measurement(name, [seconds, seconds + 1, seconds - 0.5], 1000, 10, digest, rss)

    return BenchResult(
        events=1000,
        users=10,
        days=1,
        jitter_ms=0,
        epoch_size=100,
        repeat=3,
        measurements=[
            m("handwritten", 40.0),
            m("wholelog", 2.0),
            m("serial", 10.0),
            m("parallel-w1", 4.0),
            m("parallel-w2", 2.5, rss=3000.0),
        ],
        reference="serial",
    )


def test_ratios_use_medians_against_each_baseline() -> None:
    result = _result()
    w2 = result.find("parallel-w2")
    assert w2 is not None
    assert result.speedup(w2, "handwritten") == 16.0
    assert result.speedup(w2, "wholelog") == 0.8
    assert result.speedup(w2, "batch") is None
    assert result.scaling() == {"w2/w1": 1.6}


def test_json_report_carries_every_ratio() -> None:
    report = _result().to_json()
    rows = {row["name"]: row for row in report["measurements"]}
    assert rows["wholelog"]["vs_handwritten"] == 20.0
    assert rows["parallel-w1"]["vs_wholelog"] == 0.5
    assert report["parallel_scaling"] == {"w2/w1": 1.6}
    assert report["outputs_agree"] is True


def test_table_shows_both_baselines_scaling_and_disagreement() -> None:
    result = _result()
    result.measurements.append(Measurement("batch", [5.0], 1000, 10, "other", 50.0))
    table = format_table(result)
    w2 = next(line for line in table.splitlines() if line.startswith("parallel-w2"))
    assert w2.split() == ["parallel-w2", "2.50", "400", "16.00x", "0.80x", "3,000", "-", "same"]
    assert "parallel scaling: w2/w1 1.60x" in table
    assert "DIFFERENT" in next(line for line in table.splitlines() if line.startswith("batch"))


def test_table_without_baselines_prints_dashes() -> None:
    result = BenchResult(
        1000, 10, 1, 0, 100, 1, [Measurement("serial", [1.0], 1000, 1, "d", 1.0)], "serial"
    )
    line = next(line for line in format_table(result).splitlines() if line.startswith("serial"))
    assert line.split()[3:5] == ["-", "-"]
    assert "parallel scaling" not in format_table(result)


def test_table_shows_sampled_pss_when_measured() -> None:
    m = Measurement("serial", [1.0], 1000, 1, "d", 3000.0, {}, 1234.4)
    line = next(
        line
        for line in format_table(BenchResult(1000, 10, 1, 0, 100, 1, [m], "serial")).splitlines()
        if line.startswith("serial")
    )
    assert line.split()[5:7] == ["3,000", "1,234"]


def test_header_names_each_executors_own_epoch_size_when_left_automatic() -> None:
    rows = [
        Measurement("wholelog", [1.0], 1000, 1, "d", 1.0),
        Measurement("batch", [1.0], 1000, 1, "d", 1.0, epoch_size=250_000),
        Measurement("parallel-w4", [1.0], 1000, 1, "d", 1.0, epoch_size=500_000),
    ]
    header = format_table(BenchResult(1000, 10, 1, 0, None, 1, rows, "batch")).splitlines()[0]
    assert "epoch auto (batch 250,000, parallel-w4 500,000)," in header
    fixed = format_table(BenchResult(1000, 10, 1, 0, 100, 1, rows, "batch")).splitlines()[0]
    assert "epoch 100," in fixed


def test_lateness_settings_parse_and_bad_ones_are_named() -> None:
    assert parse_latenesses("none, 300000,0") == [None, 300000, 0]
    for bad, word in (("5m", "'5m'"), ("-1", "'-1'"), ("0,0", "once"), ("", "''")):
        with pytest.raises(ValueError, match=word):
            parse_latenesses(bad)


def test_bench_lateness_exits_2_on_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "lateness", "--lateness", "soon"]) == 2
    assert "--lateness: 'soon' is not an int" in capsys.readouterr().err
    assert main(["bench", "lateness", "--repeat", "0"]) == 2


def test_a_lateness_above_the_disorder_keeps_the_output_and_less_state() -> None:
    """What the bench shows, on a small data set: with the jitter (60 s) below the lateness
    (5 min) the output is the unbounded run's; with lateness 0 some late reads see their
    windows cut; both keep far less windowed state than the unbounded run."""
    data = generate_social(users=500, events=60_000, days=10, jitter_ms=60_000)
    none, five_min, zero = measure_lateness(data, [None, 300_000, 0], repeat=1, epoch_size=8192)
    assert five_min.digest == none.digest
    assert zero.digest != none.digest
    assert five_min.state_end * 3 < none.state_end
    assert five_min.snapshot * 3 < none.snapshot


@pytest.mark.parametrize("lateness", [0, 300_000])
def test_the_bench_pipeline_equals_the_serial_oracle(lateness: int) -> None:
    """The bench's pipeline on data whose jitter makes some events late for lateness 0:
    the batch runtime writes the serial oracle's bytes."""
    events = size(20_000, 8_000)  # five epochs either way
    data = generate_social(users=300, events=events, days=5, jitter_ms=60_000)
    the_plan = plan(window_pipeline(lateness))
    outputs = []
    epoch = size(4096, 1640)
    for executor in (SerialExecutor(epoch_size=epoch), BatchExecutor(epoch_size=epoch)):
        sink = collect()
        executor.run(the_plan, social_source(data), sink)
        outputs.append(canonical_bytes(sink.chunks))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["bench", "engine", "--hot-share", "2"], "hot_share must be in [0, 1]"),
        (["bench", "engine", "--heavy-share", "0.3", "--heavy-users", "0"], "heavy_users >= 1"),
        (["bench", "e2e", "--jitter-ms", "-1"], "jitter_ms must be >= 0"),
        (["generate", "social", "--bootstrap", "x:1", "--clock-ms", "0"], "clock_ms must be >= 1"),
    ],
)
def test_bad_data_shapes_exit_2_naming_the_flags(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rejected before any data is generated or any broker is started."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--hot-share" in err and named in err
