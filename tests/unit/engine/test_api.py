"""The public API: one import for a backtest, ``engine.testing``, and examples that run."""

from __future__ import annotations

import inspect

import pytest

import engine
import engine.testing
from engine import ExecutionError, LogError, Pipeline, Record, Sliding
from engine.testing import assert_executors_agree, run_pipeline
from tests.support.doc_examples import docstring_examples, run_example


def test_exported_members() -> None:
    """``__all__`` is sorted, names what the package has, and leaves nothing public out."""
    assert list(engine.__all__) == sorted(engine.__all__)
    for name in engine.__all__:
        assert hasattr(engine, name), name
    public = {
        name
        for name, value in vars(engine).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(engine.__all__)
    assert list(engine.testing.__all__) == sorted(engine.testing.__all__)


def test_a_backtest_needs_one_import() -> None:
    for name in ("Pipeline", "Record", "Sliding", "Hopping", "Tumbling", "Unordered", "Window"):
        assert name in engine.__all__


@pytest.mark.parametrize("module", [engine, engine.testing], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: object) -> None:
    doc = inspect.getdoc(module) or ""
    blocks = docstring_examples(doc)
    assert blocks, f"{module} has no example"
    ran = sum(run_example(block)["__tests_run__"] for block in blocks)
    if module is engine.testing:
        assert ran == 1  # its example is a test, and it passed


def _alerts() -> Pipeline:
    p = Pipeline("cards")
    n = p.count("payments_1h", on="payment", key="card", window=Sliding(3_600_000))
    merchants = p.distinct(
        "merchants_1h", on="payment", key="card", value="merchant", window=Sliding(3_600_000)
    )
    chargebacks = p.count("chargebacks", on="chargeback", key="card")
    seen = p.lookup("n_1h", on="payment", table=n, key="card")
    m = p.lookup("m_1h", on="payment", table=merchants, key="card")
    cb = p.lookup("cb", on="payment", table=chargebacks, key="card")
    out = p.output("alerts", key="card", fields=["card", "n", "m", "cb"])
    p.emit(
        "alert",
        on="payment",
        output=out,
        inputs=[seen, m, cb],
        fn=lambda e, _v: [Record(e.card, {"card": e.card, "n": e.n_1h, "m": e.m_1h, "cb": e.cb})],
    )
    return p


PAYMENTS = [
    {"ts": 10, "card": "c1", "merchant": "shop"},
    {"ts": 10, "card": "c1", "merchant": "cafe"},
    {"ts": 5, "card": "c2", "merchant": "shop"},  # back in time: still read in log order
    {"ts": 3_600_011, "card": "c1", "merchant": "shop"},
]


def test_run_pipeline_gives_records_per_output_in_serial_order() -> None:
    chargebacks = {"ts": [10], "card": ["c1"]}  # columns work too
    got = run_pipeline(_alerts(), {"payment": PAYMENTS, "chargeback": chargebacks})
    # Equal timestamps: kind "chargeback" sorts before "payment", so c1's chargeback counts.
    assert got == {
        "alerts": [
            Record("c1", {"card": "c1", "n": 1, "m": 1, "cb": 1}),
            Record("c1", {"card": "c1", "n": 2, "m": 2, "cb": 1}),
            Record("c2", {"card": "c2", "n": 1, "m": 1, "cb": 0}),
            Record("c1", {"card": "c1", "n": 1, "m": 1, "cb": 1}),
        ]
    }


@pytest.mark.parametrize("epoch_size", [1, 2, None])
def test_every_in_process_executor_agrees(epoch_size: int | None) -> None:
    events = {"payment": PAYMENTS, "chargeback": []}
    want = run_pipeline(_alerts(), events)
    assert (
        assert_executors_agree(
            _alerts(), events, executors=("serial", "batch"), epoch_size=epoch_size
        )
        == want
    )
    assert run_pipeline(_alerts(), events, executor="batch", epoch_size=epoch_size) == want


def test_a_disagreeing_batch_fn_is_named_with_the_record() -> None:
    p = Pipeline("bad")
    double = p.derive(
        "double",
        on="payment",
        dtype="int64",
        fn=lambda e, _v: 2 * e.amount,
        batch_fn=lambda c: 3 * c["amount"],  # the bug a test should catch
    )
    out = p.output("o", key="card")
    p.emit(
        "e",
        on="payment",
        output=out,
        inputs=[double],
        fn=lambda e, _v: [Record(e.card, {"d": e.double})],
    )
    events = {"payment": [{"ts": 1, "card": "c1", "amount": 5}]}
    with pytest.raises(AssertionError, match=r"batch executor's output 'o' differs .* record 0"):
        assert_executors_agree(p, events, executors=("batch",))


def test_a_kind_without_events_is_refused_by_name() -> None:
    with pytest.raises(LogError, match=r"no events given for kind\(s\) \['chargeback'\]"):
        run_pipeline(_alerts(), {"payment": PAYMENTS})


def test_events_with_different_fields_are_refused() -> None:
    events = {"payment": [{"ts": 1, "card": "c1"}, {"ts": 2, "crad": "c1"}], "chargeback": []}
    with pytest.raises(LogError, match="event 1 of kind 'payment' has fields"):
        run_pipeline(_alerts(), events)
    with pytest.raises(LogError, match="lack 'ts'"):
        run_pipeline(_alerts(), {"payment": [{"card": "c1"}], "chargeback": []})


def test_rule_errors_surface_as_execution_errors() -> None:
    p = Pipeline("boom")
    out = p.output("o", key="card")
    p.emit("e", on="payment", output=out, fn=lambda e, _v: [Record(e.card, {"x": 1 // 0})])
    with pytest.raises(ExecutionError, match="ZeroDivisionError"):
        run_pipeline(p, {"payment": [{"ts": 1, "card": "c1"}]})
