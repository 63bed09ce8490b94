"""Windows and aggregate specs: validation messages and the documented semantics."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import pytest

from engine.errors import PipelineError
from engine.state.aggregates import AggregateSpec, make_scalar, make_vector
from engine.state.spec import float_from_order_keys, float_order_key, float_order_keys
from engine.windows import Hopping, Sliding, Tumbling, hopping_bounds


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Sliding(0), "Sliding.length"),
        (lambda: Sliding(-5), "Sliding.length"),
        (lambda: Sliding(1.5), "Sliding.length"),  # type: ignore[arg-type]
        (lambda: Sliding(True), "Sliding.length"),
        (lambda: Hopping(0, 1), "Hopping.size"),
        (lambda: Hopping(5, 0), "Hopping.slide"),
        (lambda: Hopping(5, 6), "Hopping.slide"),
        (lambda: Tumbling(-1), "Tumbling.size"),
        (lambda: Sliding(2**63), "Sliding.length"),
        (lambda: Sliding(5, lateness=-1), "Sliding.lateness"),
        (lambda: Sliding(5, lateness=2**63), "Sliding.lateness"),
        (lambda: Sliding(5, lateness=1.0), "Sliding.lateness"),  # type: ignore[arg-type]
        (lambda: Hopping(5, 5, lateness=True), "Hopping.lateness"),
        (lambda: Tumbling(5, lateness=-3), "Tumbling.lateness"),
    ],
)
def test_windows_reject_bad_fields_naming_them(build: object, field: str) -> None:
    with pytest.raises(PipelineError, match=field.replace(".", r"\.")):
        build()  # type: ignore[operator]


def test_tumbling_is_hopping_with_equal_slide() -> None:
    assert Tumbling(60) == Hopping(60, 60)


def test_hopping_bounds_pick_the_window_ending_soonest_also_before_zero() -> None:
    w = Hopping(10, 4)
    assert hopping_bounds(w, 0) == (-6, 4)
    assert hopping_bounds(w, 3) == (-6, 4)
    assert hopping_bounds(w, 4) == (-2, 8)
    assert hopping_bounds(w, -1) == (-10, 0)
    assert hopping_bounds(Tumbling(5), -5) == (-5, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "median"}, "AggregateSpec.kind"),
        ({"kind": "count", "window": 5}, "AggregateSpec.window"),
        ({"kind": "count", "dtype": "int32"}, "AggregateSpec.dtype"),
        ({"kind": "sum", "dtype": "bool"}, "AggregateSpec.dtype"),
        ({"kind": "min", "dtype": "bool"}, "AggregateSpec.dtype"),
        ({"kind": "ratio", "dtype": "int64"}, "AggregateSpec.dtype"),
        ({"kind": "distinct", "dtype": "float64"}, "AggregateSpec.dtype"),
    ],
)
def test_spec_rejects_bad_fields_naming_them(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(PipelineError, match=field.replace(".", r"\.")):
        AggregateSpec(**kwargs)  # type: ignore[arg-type]


def test_windowed_float_sum_is_rejected_with_the_reason() -> None:
    with pytest.raises(PipelineError, match="windowed sums need integer values"):
        AggregateSpec("sum", Sliding(10), "float64")
    AggregateSpec("sum", None, "float64")  # unwindowed float sums are fine


def _bits(x: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", x))[0])


def test_float_order_is_total_and_round_trips() -> None:
    nan, neg_nan = float("nan"), -float("nan")
    ordered = [neg_nan, -math.inf, -1.0, -5e-324, -0.0, 0.0, 5e-324, 1.0, math.inf, nan]
    keys = [float_order_key(x) for x in ordered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    vec = float_order_keys(np.array(ordered))
    assert vec.tolist() == keys
    back = float_from_order_keys(vec)
    assert [_bits(x) for x in back] == [_bits(x) for x in ordered]


def _drive(spec: AggregateSpec, writes: Sequence[tuple[int, int, int, object]]) -> list[object]:
    """Write (key, seq, ts, value) and read key 1 after each write, scalar and vectorised;
    check they agree bit for bit and return the scalar results."""
    scalar = make_scalar(spec)
    vector = make_vector(spec)
    keys = np.array([w[0] for w in writes], dtype=np.int64)
    seqs = np.array([w[1] for w in writes], dtype=np.int64)
    ts = np.array([w[2] for w in writes], dtype=np.int64)
    values = np.array([w[3] for w in writes], dtype=spec.dtype)
    vector.write_epoch(keys, seqs, ts, values)
    got, present = vector.read(keys, seqs, ts, before=False)
    out: list[object] = []
    for i, (key, seq, t, value) in enumerate(writes):
        scalar.write(key, seq, t, value)
        ok, result = scalar.read(key, seq, t, before=False)
        assert ok == bool(present[i])
        if spec.dtype == "float64" and spec.kind != "count":
            assert _bits(float(result)) == _bits(float(got[i]))  # type: ignore[arg-type]
        elif spec.kind == "ratio":
            assert result == (int(got[i, 0]), int(got[i, 1]))
        else:
            assert result == got[i].item()
        out.append(result)
    return out


def test_float_sum_adds_in_log_order_exactly() -> None:
    writes = [(1, s, 0, v) for s, v in enumerate([1e16, 1.0, 1.0, -1e16, 0.1, -0.0])]
    sums = _drive(AggregateSpec("sum", None, "float64"), writes)
    acc = 0.0
    for (_, _, _, v), got in zip(writes, sums, strict=True):
        acc = acc + v
        assert _bits(got) == _bits(acc)  # type: ignore[arg-type]
    assert sums[3] == 0.0  # 1e16 + 1 + 1 rounds twice; pairwise summation would give 2.0


def test_float_sum_of_negative_zero_is_positive_zero() -> None:
    (total,) = _drive(AggregateSpec("sum", None, "float64"), [(1, 0, 0, -0.0)])
    assert _bits(total) == _bits(0.0)  # type: ignore[arg-type]


def test_min_max_treat_signed_zeros_and_nans_by_total_order() -> None:
    writes = [(1, 0, 0, 0.0), (1, 1, 0, -0.0), (1, 2, 0, float("nan")), (1, 3, 0, 1.0)]
    lows = _drive(AggregateSpec("min", None, "float64"), writes)
    highs = _drive(AggregateSpec("max", None, "float64"), writes)
    assert _bits(lows[-1]) == _bits(-0.0)  # type: ignore[arg-type]
    assert math.isnan(highs[-1])  # type: ignore[arg-type]


def test_int_sums_wrap_like_numpy() -> None:
    big = 2**63 - 1
    sums = _drive(AggregateSpec("sum", Sliding(100)), [(1, 0, 0, big), (1, 1, 1, 1)])
    assert sums == [big, -(2**63)]


def test_empty_results() -> None:
    for kind, empty in [("count", 0), ("sum", 0), ("distinct", 0), ("ratio", (0, 0))]:
        for window in (None, Sliding(5), Hopping(10, 5)):
            spec = AggregateSpec(kind, window, "bool" if kind == "ratio" else "int64")  # type: ignore[arg-type]
            assert make_scalar(spec).read(7, 3, 100, before=False) == (True, empty)
            values, present = make_vector(spec).read(
                np.array([7]), np.array([3]), np.array([100]), before=False
            )
            assert present.tolist() == [True]
            got = values[0].tolist() if values.ndim == 1 else tuple(values[0].tolist())
            assert got == empty
    for kind in ("min", "max", "first", "last", "since_last"):
        spec = AggregateSpec(kind, Sliding(5))  # type: ignore[arg-type]
        assert make_scalar(spec).read(7, 3, 100, before=False) == (False, None)


def test_before_excludes_the_readers_own_writes() -> None:
    spec = AggregateSpec("count", Sliding(10))
    table = make_vector(spec)
    table.write_epoch(np.array([1, 1, 1]), np.array([0, 1, 1]), np.array([0, 1, 1]), None)
    seqs, ts = np.array([1, 1]), np.array([1, 1])
    assert table.read(np.array([1, 1]), seqs, ts, before=True)[0].tolist() == [1, 1]
    assert table.read(np.array([1, 1]), seqs, ts, before=False)[0].tolist() == [3, 3]


def test_sliding_window_counts_late_writes_by_event_time() -> None:
    # Times go backwards; each read at its own write's time r sees (r - 5, r].
    spec = AggregateSpec("count", Sliding(5))
    writes = [(1, 0, 10, 1), (1, 1, 2, 1), (1, 2, 9, 1)]
    assert _drive(spec, writes) == [1, 1, 1]
    scalar, vector = make_scalar(spec), make_vector(spec)
    for key, seq, t, _ in writes:
        scalar.write(key, seq, t, None)
    vector.write_epoch(np.array([1, 1, 1]), np.array([0, 1, 2]), np.array([10, 2, 9]), None)
    # A later read at 10 sees 10 and 9 but not 2.
    assert scalar.read(1, 3, 10, before=False) == (True, 2)
    got, _ = vector.read(np.array([1]), np.array([3]), np.array([10]), before=False)
    assert got.tolist() == [2]


def test_hopping_window_sees_writes_later_than_the_reader() -> None:
    # Window [0, 10) for a read at 3 includes a write at 8 already in the log.
    spec = AggregateSpec("count", Tumbling(10))
    table = make_scalar(spec)
    table.write(1, 0, 8, None)
    assert table.read(1, 1, 3, before=False) == (True, 1)
    assert table.read(1, 1, 10, before=False) == (True, 0)
