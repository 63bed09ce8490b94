"""The spam backtest: every executor and both baselines give the same records.

``restream bench engine`` checks the same agreement (with the serial oracle) at any size; these
tests keep it in the suite: with the oracle on a small log, and without it (it runs at a few
thousand events/s) on a million events.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.benchmark import score_digest
from engine.examples.social.data import SCENARIOS, generate_social
from engine.examples.social.handwritten import spam_scores_handwritten
from engine.examples.social.source import social_source
from engine.examples.social.spam import SCORE_FIELDS, build_spam_pipeline
from engine.examples.social.wholelog import spam_scores_wholelog
from engine.executors.batch import BatchExecutor
from engine.executors.parallel import ParallelExecutor
from engine.executors.serial import SerialExecutor
from engine.output import collect
from engine.planner import plan
from tests.support.executors import ExecutorMaker


def _digest_of_run(executor: Any, data: Any) -> str:
    sink = collect()
    executor.run(plan(build_spam_pipeline()), social_source(data), sink)
    cols = {
        name: np.concatenate([np.asarray(c.columns[name].tolist()) for c in sink.chunks])
        for name in SCORE_FIELDS
    }
    return score_digest(cols)


def _digest_of_scores(scores: Any) -> str:
    return score_digest({name: getattr(scores, name) for name in SCORE_FIELDS})


@pytest.fixture(scope="module")
def small() -> tuple[Any, str]:
    """A small social data set and the serial oracle's digest of its scores."""
    data = generate_social(users=2_000, events=40_000, days=10, seed=3, jitter_ms=3_000)
    return data, _digest_of_run(SerialExecutor(), data)


def test_every_executor_equals_the_oracle(executor: ExecutorMaker, small: tuple[Any, str]) -> None:
    data, oracle = small
    assert _digest_of_run(executor(epoch_size=5_000), data) == oracle


def test_three_workers_and_another_epoch_size_equal_the_oracle(small: tuple[Any, str]) -> None:
    data, oracle = small
    assert _digest_of_run(BatchExecutor(epoch_size=7_000), data) == oracle
    assert _digest_of_run(ParallelExecutor(workers=3, epoch_size=5_000), data) == oracle


def test_both_baselines_equal_the_oracle(small: tuple[Any, str]) -> None:
    data, oracle = small
    assert _digest_of_scores(spam_scores_handwritten(data)) == oracle
    assert _digest_of_scores(spam_scores_wholelog(data)) == oracle


@pytest.mark.slow
def test_a_million_events_agree_across_implementations() -> None:
    data = generate_social(events=1_000_000, jitter_ms=2_000)
    reference = _digest_of_scores(spam_scores_handwritten(data))
    assert _digest_of_scores(spam_scores_wholelog(data)) == reference
    assert _digest_of_run(BatchExecutor(), data) == reference
    assert _digest_of_run(ParallelExecutor(workers=2), data) == reference


@pytest.mark.parametrize("epoch_size", [997, 20_000])
def test_a_skewed_log_agrees_with_the_oracle(epoch_size: int) -> None:
    """Shaped like production: one user sends 40% of the messages, 30 users another 30%, a
    minute clock and timestamps up to 3 hours back; the compiled kernels' disordered paths
    (tangled segments, deep jumps back, the distinct count's divide and conquer) carry most
    of the reads. Small epochs cut the hot key's writes into many segments and histories."""
    skew, jitter = SCENARIOS["skewed"]
    data = generate_social(users=3_000, events=60_000, days=3, seed=5, jitter_ms=jitter, skew=skew)
    oracle = _digest_of_run(SerialExecutor(), data)
    assert _digest_of_run(BatchExecutor(epoch_size=epoch_size), data) == oracle
    assert _digest_of_run(ParallelExecutor(workers=2, epoch_size=epoch_size), data) == oracle
    assert _digest_of_scores(spam_scores_handwritten(data)) == oracle


@pytest.mark.slow
def test_a_million_skewed_events_agree_across_implementations() -> None:
    skew, jitter = SCENARIOS["skewed"]
    data = generate_social(events=1_000_000, jitter_ms=jitter, skew=skew)
    reference = _digest_of_scores(spam_scores_handwritten(data))
    assert _digest_of_run(BatchExecutor(), data) == reference
    assert _digest_of_run(ParallelExecutor(workers=2), data) == reference
