"""The ``restream bench engine`` report: ratios, scaling and RSS lines from measurements."""

from __future__ import annotations

from connector.engine_commands import format_table
from engine.benchmark import BenchResult, Measurement


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
