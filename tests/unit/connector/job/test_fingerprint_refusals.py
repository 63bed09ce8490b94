"""Every setting that decides a job's output is pinned by its checkpoint manifest: a restart
that changes any of them is refused (exit 2, naming it) before anything touches a broker.

One change per part of ``fingerprint_parts``, each through the real ``restream run`` path
(``run_job``); a part without a change here, or a change that no part notices, fails."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.config import RunConfig, load_config
from connector.errors import ConfigError
from connector.job import run as run_module
from connector.job.checkpoints import FileCheckpoints, Manifest, fingerprint
from connector.job.run import build_job, fingerprint_parts, run_job
from connector.pipeline_loader import load_pipeline
from tests.support.crash_data import build_pipeline

SCHEMAS = Path(__file__).resolve().parents[4] / "schemas" / "social"
BASE = {
    "job_id": "pinned",
    # Never reached: a refusal comes before any broker is asked.
    "bootstrap_servers": "127.0.0.1:9",
    "pipeline": "social-spam",
    "inputs": ["m=message", "f=friendship"],
    "executor": "parallel",
    "workers": "2",
    "epoch_size": "1000",
}


def _config(tmp_path: Path, **changes: str | list[str]) -> RunConfig:
    return load_config({**BASE, "checkpoint_dir": str(tmp_path), **changes}, environ={})


def _message_schema_with_doc(tmp_path: Path) -> str:
    raw = json.loads((SCHEMAS / "Message.avsc").read_text())
    raw["doc"] = "the same fields, another text"
    path = tmp_path / "Message.avsc"
    path.write_text(json.dumps(raw))
    return str(path)


#: Per part of fingerprint_parts: the settings that change it (given tmp_path).
CHANGES: dict[str, Callable[[Path], dict[str, str | list[str]]]] = {
    "pipeline": lambda t: {
        "pipeline": "tests.support.crash_data:build_pipeline",
        "schemas": ["message=social/Message", "friendship=social/Friendship"],
        "output_schemas": ["scores=social/SpamScore"],
        "key_format": "decimal",
    },
    "plan": lambda t: {},  # the pipeline's code changed under the same name: see below
    "inputs": lambda t: {"inputs": ["m2=message", "f=friendship"]},
    "schemas": lambda t: {"schemas": [f"message={_message_schema_with_doc(t)}"]},
    "value_format": lambda t: {"value_format": "json"},
    "key_format": lambda t: {"key_format": "string"},
    "outputs": lambda t: {"outputs": ["scores=elsewhere"]},
    "output_format": lambda t: {"output_format": "json"},
    "dead_letter_topic": lambda t: {"dead_letter_topic": "pinned.bad"},
    "start": lambda t: {"start": "ts:2026-01-01T00:00:00Z"},
    "end": lambda t: {"end": "ts:2026-02-01T00:00:00Z"},
    "executor": lambda t: {"executor": "batch"},
    "workers": lambda t: {"workers": "3"},
    "epoch_size": lambda t: {"epoch_size": "2000"},
}


def test_every_part_of_the_fingerprint_has_a_change_here(tmp_path: Path) -> None:
    assert set(CHANGES) == set(fingerprint_parts(build_job(_config(tmp_path))))


def _pin(tmp_path: Path) -> dict[str, object]:
    """Write the manifest of a first run with the base settings; return its parts."""
    config = _config(tmp_path)
    parts = fingerprint_parts(build_job(config))
    store = FileCheckpoints(tmp_path, job="pinned", every_epochs=1, every_seconds=60)
    store.write_manifest(Manifest("pinned", fingerprint(parts), parts, ()))
    # The same settings resume.
    assert store.manifest(fingerprint(parts), parts) is not None
    return parts


@pytest.mark.parametrize("part", sorted(CHANGES))
def test_changing_a_pinned_setting_on_resume_is_refused(
    part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _pin(tmp_path)
    if part == "plan":
        # Same name, other code: the job loads a pipeline whose plan differs.
        real = load_pipeline
        monkeypatch.setattr(
            run_module,
            "load_pipeline",
            lambda spec, **kw: build_pipeline() if spec == "social-spam" else real(spec, **kw),
        )
    config = _config(tmp_path, **CHANGES[part](tmp_path))
    after = fingerprint_parts(build_job(config))
    changed = {
        k for k in before if json.dumps(before[k], default=str) != json.dumps(after[k], default=str)
    }
    assert part in changed, f"the change meant for {part} changed {sorted(changed)}"
    with pytest.raises(ConfigError, match="different settings") as refused:
        run_job(config, out=io.StringIO())
    assert f"changed: {part}" in str(refused.value) or f", {part}" in str(refused.value)
    assert str(refused.value).startswith("checkpoint_dir (--checkpoint-dir, ")
