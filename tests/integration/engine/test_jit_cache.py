"""A job on a filesystem where nothing is writable still runs (compiling without a cache).

numba raises "no locator available" when a function with ``cache=True`` is compiled and no
cache directory can be written; :mod:`engine.state.jit` must notice first. This runs a real
replay in a fresh interpreter whose NUMBA_CACHE_DIR, cache home and temporary folder are
all paths below a regular file (never creatable, also for root).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import engine.state.jit as jit
assert jit.CACHE_DIR is None, jit.CACHE_DIR
from engine.examples.social.data import generate_social, SCENARIOS
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.executors.batch import BatchExecutor
from engine.executors.serial import SerialExecutor
from engine.output import collect
from engine.planner import plan

skew, jitter = SCENARIOS["skewed"]
data = generate_social(users=50, events=3000, jitter_ms=jitter, skew=skew)
p = plan(build_spam_pipeline())
outs = []
for ex in (SerialExecutor(epoch_size=500), BatchExecutor(epoch_size=500)):
    sink = collect()
    ex.run(p, social_source(data), sink)
    outs.append([c.columns["score"].tolist() for c in sink.chunks])
assert outs[0] == outs[1]
print("ok", sum(len(c) for c in outs[1]))
"""


def test_a_replay_runs_with_no_writable_cache_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    nowhere = str(blocker / "sub")
    env = dict(os.environ, NUMBA_CACHE_DIR=nowhere, XDG_CACHE_HOME=nowhere, TMPDIR=nowhere)
    env["HOME"] = nowhere
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")
    assert "compiling without a cache" in done.stderr


_WARM_SCRIPT = """
import gc
import tempfile
from pathlib import Path
import numba
from engine.executors.arena import load, store
from engine.executors.runtime import EpochRuntime
from engine.executors.sharding import Shard
from engine.merge import merge_log
from engine.state.jit import warm_up
from engine.examples.social.data import generate_social, SCENARIOS
from engine.examples.social.source import social_source
from engine.examples.social.spam import build_spam_pipeline
from engine.executors.batch import BatchExecutor
from engine.output import collect
from engine.planner import plan


def signatures():
    return {
        f"{d.py_func.__module__}.{d.py_func.__qualname__}": len(d.signatures)
        for d in gc.get_objects()
        if isinstance(d, numba.core.registry.CPUDispatcher)
    }


warm_up()
before = signatures()
skew, jitter = SCENARIOS["skewed"]
for data in (
    generate_social(users=2000, events=15000, days=3, seed=1),
    generate_social(users=2000, events=15000, days=3, seed=2, jitter_ms=jitter, skew=skew),
):
    # Epochs of 5,000 events: more than 2,048 writes a table, where the sorts compile.
    BatchExecutor(epoch_size=5000).run(plan(build_spam_pipeline()), social_source(data), collect())
    # As a parallel worker sees it: epochs unpickled from the arena (read-only arrays), its
    # share of the keys under balanced ownership (the skewed log pins its heavy senders).
    worker = EpochRuntime(plan(build_spam_pipeline()), shard=Shard(0, 2), exchange=lambda p: p)
    with tempfile.TemporaryDirectory() as tmp:
        for i, epoch in enumerate(merge_log(social_source(data), epoch_size=5000)):
            path = Path(tmp) / f"epoch{i}"
            store(path, epoch)
            worker.process(load(path))
after = signatures()
# A kernel the warm-up compiled a variant of must not gain another; one it never compiled
# must not be compiled by a run either (a worker would compile it on its first epoch).
grown = {n: (before.get(n, 0), c) for n, c in after.items() if c != before.get(n, 0)}
print("grown", grown)
"""


def test_a_run_compiles_no_kernel_variant_the_warm_up_left_out() -> None:
    """A forked worker that meets an argument type the warm-up did not compile (a read-only
    array, another dtype) compiles it on its first large epoch: seconds with a cold cache.
    A fresh interpreter, so that no other test has compiled a variant first."""
    done = subprocess.run(
        [sys.executable, "-c", _WARM_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "grown {}", done.stdout
