"""How the ray executor ships a plan to its actors (no Ray process is started)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from engine.executors.ray_actors import load_plan, ship_plan
from engine.executors.snapshot import fingerprint
from engine.pipeline import Update
from engine.planner import plan
from tests.support.checkpoints import spam_with_timers

# ship_plan pickles with Ray's cloudpickle.
pytest.importorskip("ray", reason="the ray extra is not installed")


def _merge_of(p: Any, name: str) -> Any:
    return next(o.op.merge for o in p.operators if isinstance(o.op, Update) and o.op.name == name)


def test_a_shipped_plan_is_the_same_plan() -> None:
    original = plan(spam_with_timers())
    shipped = load_plan(ship_plan(original))
    assert shipped is not original
    assert fingerprint(shipped) == fingerprint(original)
    assert shipped.describe() == original.describe()


def test_closures_arrive_bound_to_their_module_so_timers_they_make_can_be_checkpointed() -> None:
    """A merge made inside a pipeline builder schedules lambdas; checkpoints store those by
    code and module, which needs the module's own globals (cloudpickle would give a copy)."""
    shipped = load_plan(ship_plan(plan(spam_with_timers())))
    bump = _merge_of(shipped, "recent_rcpt")
    assert bump.__globals__ is sys.modules["tests.support.checkpoints"].__dict__
