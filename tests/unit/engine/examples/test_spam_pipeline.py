"""The spam backtest written with the pipeline API agrees with both hand-made references."""

from __future__ import annotations

import numpy as np
import pytest

from engine.examples.social.data import generate_social
from engine.examples.social.handwritten import spam_scores_handwritten
from engine.examples.social.source import social_source
from engine.examples.social.spam import (
    SCORE_FIELDS,
    build_spam_pipeline,
    has_email,
    has_email_batch,
)
from engine.executors.batch import BatchExecutor
from engine.executors.serial import SerialExecutor
from engine.output import collect
from engine.planner import plan
from tests.support.budget import size


def _columns(chunks: list) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {name: [] for name in SCORE_FIELDS}  # type: ignore[type-arg]
    for chunk in chunks:
        for _key, value in chunk.records():
            for name in SCORE_FIELDS:
                out[name].append(value[name])
    return out


@pytest.mark.parametrize(("jitter_ms", "epoch_size"), [(0, 4096), (5_000, 1_000), (60_000, 50_000)])
def test_serial_and_batch_equal_the_handwritten_version(jitter_ms: int, epoch_size: int) -> None:
    events = size(12_000, quick=4_000)
    data = generate_social(users=300, events=events, days=10, seed=7, jitter_ms=jitter_ms)
    expected = spam_scores_handwritten(data)
    pipeline = plan(build_spam_pipeline())
    for executor in (SerialExecutor(epoch_size=epoch_size), BatchExecutor(epoch_size=epoch_size)):
        sink = collect()
        executor.run(pipeline, social_source(data), sink)
        got = _columns(sink.chunks)
        for name in SCORE_FIELDS:
            assert got[name] == getattr(expected, name).tolist(), (executor.name, name)
        # Python types too: rules and score are ints, spam a bool.
        first = sink.chunks[0].records()[0][1]
        assert type(first["spam"]) is bool and type(first["rules"]) is int


def test_some_rules_fire_on_the_generated_data() -> None:
    # Rule 4 needs a week of history.
    data = generate_social(users=300, events=12_000, days=10, seed=7)
    scores = spam_scores_handwritten(data)
    fired = {bit: int(np.count_nonzero(scores.rules & bit)) for bit in (1, 2, 4, 8, 16)}
    assert all(count > 0 for count in fired.values()), fired
    assert 0 < int(scores.spam.sum()) < len(scores.spam)


def test_email_detection_batch_equals_regex() -> None:
    texts = [
        "a@b.c",
        "@b.c",
        "a@.c",
        "a@b.",
        "x a@b.cd y",
        "no mail",
        "a@b@c.d",
        "a@@b.cc",
        "é@ü.ß",
        "a@b\n.c",
        "",
        "a b@c.d",
    ]
    assert has_email_batch(np.array(texts, dtype=object)).tolist() == [has_email(t) for t in texts]


def test_score_fields_are_the_schema_s_and_the_reference_columns() -> None:
    import dataclasses
    import json
    from pathlib import Path

    from engine.examples.social.handwritten import ScoreColumns

    avsc = Path(__file__).resolve().parents[4] / "schemas" / "social" / "SpamScore.avsc"
    schema = json.loads(avsc.read_text(encoding="utf-8"))
    assert tuple(f["name"] for f in schema["fields"]) == SCORE_FIELDS
    assert tuple(f.name for f in dataclasses.fields(ScoreColumns)) == SCORE_FIELDS
