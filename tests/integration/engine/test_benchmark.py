"""``restream bench engine`` end to end on a small data set: rounds, medians, agreement."""

from __future__ import annotations

from engine.benchmark import run_engine_bench


def test_runs_are_interleaved_round_by_round_and_agree() -> None:
    said: list[str] = []
    result = run_engine_bench(
        events=3000,
        users=200,
        days=2,
        epoch_size=500,
        repeat=2,
        only=["wholelog", "batch", "parallel-w2"],
        progress=said.append,
    )
    assert [s.split(":")[0] for s in said] == [
        "wholelog run 1/2",
        "batch run 1/2",
        "parallel-w2 run 1/2",
        "wholelog run 2/2",
        "batch run 2/2",
        "parallel-w2 run 2/2",
    ]
    assert [m.name for m in result.measurements] == ["wholelog", "batch", "parallel-w2"]
    assert all(len(m.seconds) == 2 and m.seconds == sorted(m.seconds) for m in result.measurements)
    assert result.agree()  # every implementation wrote the reference's records
    assert len({m.digest for m in result.measurements}) == 1
