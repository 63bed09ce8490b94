"""What the Ray executor says when a worker or reader actor dies, fails or stalls
(engine.executors.ray_executor): both kinds read alike, name the actor (node, pid, a reader's
partitions) and the epoch, and a stall carries the fields the connector reports. No Ray runs."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from engine.errors import ExecutionError, StallError
from engine.executors.ray_actors import Placed
from engine.executors.ray_executor import _Actors, _Readers
from engine.log import Epoch, PartitionSpec

_EPOCH = Epoch(
    index=3,
    seq_start=300,
    seq_end=400,
    ts=np.zeros(0, np.int64),
    kind=np.zeros(0, np.int8),
    kinds=(),
    topics=(),
    events={},
)
_HERE = Placed(ip="10.0.0.7", node="n1", pid=4242)


def _workers(placed: list[Placed]) -> _Actors:
    plan: Any = None  # the messages never look at the plan
    return _Actors(
        ray=ModuleType("ray"),
        plan=plan,
        group=None,
        actors=[None, None],
        placed=placed,
        progress=[(-1, -1), (-1, -1)],
    )


def _readers(placed: list[Placed]) -> _Readers:
    specs = [
        (PartitionSpec("t", 0, "k"), PartitionSpec("t", 2, "k")),
        (PartitionSpec("t", 1, "k"),),
    ]
    return _Readers(actors=[None, None], specs=specs, placed=placed)


def test_a_worker_is_named_with_its_node_and_pid_once_placed() -> None:
    assert _workers([_HERE, _HERE]).process(1).name == "worker 1 (node 10.0.0.7, pid 4242)"
    assert _workers([]).process(1).name == "worker 1"


def test_a_reader_is_named_with_its_node_pid_and_partitions() -> None:
    assert _readers([_HERE]).process(0).name == (
        "reader 0 (node 10.0.0.7, pid 4242; partitions t/0, t/2)"
    )
    assert _readers([_HERE]).process(1).name == "reader 1 (partitions t/1)"


def test_a_death_and_a_failure_name_the_actor_the_epoch_and_rays_first_line() -> None:
    cause = RuntimeError("the actor died unexpectedly\n  more details")
    for proc in (_workers([_HERE, _HERE]).process(0), _readers([_HERE]).process(0)):
        died = proc.died(_EPOCH, cause)
        assert isinstance(died, ExecutionError)
        assert str(died) == (
            f"{proc.name} died while processing epoch 3 (seq 300..399) (the actor died "
            "unexpectedly); the run was stopped, its output is incomplete"
        )
        assert died.seq == 300
        failed = proc.failed(None, cause)
        assert str(failed) == (
            f"{proc.name}: the actor died unexpectedly; the run was stopped, its output is "
            "incomplete"
        )
        assert failed.seq is None


def test_a_stall_carries_the_actor_its_pid_and_the_epoch() -> None:
    err = _readers([_HERE]).process(0).stalled("did not answer for 2 s reading", _EPOCH, 2.0)
    assert isinstance(err, StallError)
    assert str(err) == (
        "reader 0 (node 10.0.0.7, pid 4242; partitions t/0, t/2) did not answer for 2 s "
        "reading; the run was stopped, its output is incomplete"
    )
    assert (err.process, err.pid, err.seconds) == ("reader 0", 4242, 2.0)
    assert (err.epoch, err.seq_start, err.seq_end) == (3, 300, 400)
    unplaced = _workers([]).process(1).stalled("made no progress for 5 s", None, 5.0)
    assert (unplaced.process, unplaced.pid, unplaced.epoch, unplaced.seq_start) == (
        "worker 1",
        None,
        None,
        None,
    )


class _FakeRay(ModuleType):
    def __init__(self) -> None:
        super().__init__("ray")
        self.calls: list[dict[str, Any]] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_a_local_cluster_starts_without_the_dashboard(monkeypatch: Any) -> None:
    """A cluster that a run starts for itself gets no dashboard (its processes would take CPU
    from the workers); a cluster given by address, or by RAY_ADDRESS, is joined as it is."""
    from engine.executors import ray_executor

    fake = _FakeRay()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_executor.RayExecutor(workers=2).connect()
    ray_executor.RayExecutor(workers=2, address="10.0.0.7:6379").connect()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.8:6379")
    ray_executor.RayExecutor(workers=2).connect()
    assert [c.get("include_dashboard") for c in fake.calls] == [False, None, None]
    assert [c["address"] for c in fake.calls] == [None, "10.0.0.7:6379", None]
