"""A finished job's rerun: instant with its done marker, refused when its output is gone."""

from __future__ import annotations

import io
import itertools
import json
import logging
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

import connector.job.run as run_module
from connector.cli.app import main
from connector.config import RunConfig
from connector.errors import ConfigError
from connector.job.run import run_job
from connector.kafka.offsets import KafkaOffsets
from engine.examples.social.data import SocialData, generate_social
from tooling.broker import LocalBroker
from tooling.generate import write_social

PARTITIONS = 2


@pytest.fixture(scope="module")
def social() -> SocialData:
    return generate_social(users=300, events=4_000, days=2, seed=11, partitions=PARTITIONS)


def _job(broker: LocalBroker, data: SocialData, ckpt: Path) -> list[str]:
    """Topics written with ``data``, and the `restream run` arguments of a job over them."""
    prefix = f"restream-test-{uuid.uuid4().hex[:10]}"
    topics = (f"{prefix}.messages", f"{prefix}.friendships")
    write_social(
        data,
        bootstrap=broker.bootstrap,
        messages_topic=topics[0],
        friendships_topic=topics[1],
        partitions=PARTITIONS,
    )
    ends = [
        f"{topic}/{p}={n}"
        for topic, column in zip(
            topics, (data.messages.partition, data.friendships.partition), strict=True
        )
        for p, n in enumerate(np.bincount(column, minlength=PARTITIONS).tolist())
    ]
    return [
        *("--job-id", f"done-{uuid.uuid4().hex[:8]}", "--bootstrap-servers", broker.bootstrap),
        *("--pipeline", "social-spam", "--executor", "batch", "--epoch-size", "1000"),
        *("--inputs", f"{topics[0]}=message", "--inputs", f"{topics[1]}=friendship"),
        *("--end", "offsets:" + ",".join(ends), "--progress", "none"),
        *("--checkpoint-dir", str(ckpt), "--checkpoint-every-epochs", "2"),
    ]


def _config(args: list[str], **kw: object) -> RunConfig:
    values = dict(zip(args[::2], args[1::2], strict=True))
    config: dict[str, object] = {
        "job_id": values["--job-id"],
        "bootstrap_servers": values["--bootstrap-servers"],
        "pipeline": "social-spam",
        "executor": "batch",
        "epoch_size": 1000,
        "inputs": tuple(
            tuple(a.split("=")) for flag, a in itertools.pairwise(args) if flag == "--inputs"
        ),
        "end": values["--end"],
        "progress": "none",
        "checkpoint_dir": values["--checkpoint-dir"],
        "checkpoint_every_epochs": 2,
    }
    config.update(kw)
    return RunConfig(**config)  # type: ignore[arg-type]


def _ends(bootstrap: str, job: str) -> dict[tuple[str, int], tuple[int, int]]:
    """Watermarks of every partition of the job's output, dead-letter and lease topics."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    tps = [
        (topic, p)
        for topic in (f"{job}.scores", f"{job}.dead-letter", f"{job}.lease")
        for p in sorted(metadata[topic].partitions)
    ]
    with KafkaOffsets({"bootstrap.servers": bootstrap}, timeout_s=10) as offsets:
        return offsets.watermarks(tps)


def test_a_finished_jobs_rerun_replays_nothing_and_says_so(
    broker: LocalBroker,
    social: SocialData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = _job(broker, social, tmp_path)
    config = _config(args)
    job = config.job_id
    first = run_job(config, out=io.StringIO())
    total = len(social.messages) + len(social.friendships)
    assert first.events == total and first.already_finished is None
    done = json.loads((tmp_path / str(job) / "done.json").read_text(encoding="utf-8"))
    assert done["events"] == total and done["job"] == job
    ends = _ends(broker.bootstrap, str(job))

    def no_replay(*_args: object, **_kw: object) -> object:
        raise AssertionError("a finished job's rerun built an executor")

    monkeypatch.setattr(run_module, "_executor", no_replay)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="connector.job.run"):
        code = main(["run", *args])
    assert code == 0
    took = time.monotonic() - started
    out = capsys.readouterr().out
    scores = first.outputs[f"{job}.scores"]
    line = f"job {job} already finished at {done['finished_at']}: "
    assert f"restream: {line}" in out
    assert f"{scores:,} in {job}.scores" in out
    assert f"({total:,} events replayed), nothing to do" in out
    assert line in caplog.text
    # Nothing written: no output, no dead letter, not even a lease claim.
    assert _ends(broker.bootstrap, str(job)) == ends
    assert took < 20, f"the rerun of a finished job took {took:.1f} s"

    # Other settings are refused as before, marker or not.
    with pytest.raises(ConfigError, match="different settings"):
        run_job(_config(args, epoch_size=500), out=io.StringIO())


def test_a_finished_job_whose_output_is_gone_is_refused_until_started_over(
    broker: LocalBroker, social: SocialData, tmp_path: Path
) -> None:
    args = _job(broker, social, tmp_path)
    config = _config(args)
    job = str(config.job_id)
    first = run_job(config, out=io.StringIO())
    topic = f"{job}.scores"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed after its deletion"
        time.sleep(0.1)
    for _rerun in range(2):  # refused, and nothing created that would let a rerun pass
        with pytest.raises(ConfigError, match=f"topic {topic} is missing; it held this job's"):
            run_job(config, out=io.StringIO())
        assert topic not in admin.list_topics(timeout=10).topics
    again = run_job(_config(args, restart_from_scratch=True), out=io.StringIO())
    assert again.already_finished is None
    assert again.events == first.events and again.outputs == first.outputs
    assert (tmp_path / job / "done.json").exists()
