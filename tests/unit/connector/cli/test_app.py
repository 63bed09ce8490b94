"""The command line: flags, their env vars, exit codes (no broker is started)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import pytest

from connector.cli import app as cli
from connector.cli.options import resolve_env_defaults
from connector.errors import BrokerError


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for command in ("broker", "generate", "demo"):
        assert command in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("restream ")


def test_every_flag_shows_its_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["generate", "social", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for env in (
        "USERS",
        "EVENTS",
        "DAYS",
        "SEED",
        "JITTER_MS",
        "PARTITIONS",
        "BOOTSTRAP",
        "MESSAGES_TOPIC",
        "FRIENDSHIPS_TOPIC",
        "FORMAT",
        "SCHEMA_REGISTRY",
        "WORKERS",
    ):
        assert f"RESTREAM_{env}" in text


def _parse(argv: list[str]) -> argparse.Namespace:
    args = cli.build_parser().parse_args(argv)
    resolve_env_defaults(args)
    return args


def test_env_vars_fill_flags_that_were_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTREAM_USERS", "5")
    monkeypatch.setenv("RESTREAM_FORMAT", "avro-confluent")
    monkeypatch.setenv("RESTREAM_JITTER_MS", "250")
    args = _parse(["generate", "social", "--users", "7"])
    assert (args.users, args.format, args.jitter_ms, args.events) == (
        7,
        "avro-confluent",
        250,
        1_000_000,
    )
    assert _parse(["demo"]).users == 5


@pytest.mark.parametrize(
    ("env", "value"),
    [("RESTREAM_USERS", "many"), ("RESTREAM_FORMAT", "json"), ("RESTREAM_KIND", "kafka")],
)
def test_bad_env_values_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    command = ["broker"] if env == "RESTREAM_KIND" else ["generate", "social"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command)
    assert exit_info.value.code == 2
    assert env in capsys.readouterr().err


_SHARED_FLAGS = {
    "jitter_ms": "RESTREAM_JITTER_MS",
    "scenario": "RESTREAM_SCENARIO",
    "hot_share": "RESTREAM_HOT_SHARE",
    "heavy_share": "RESTREAM_HEAVY_SHARE",
    "heavy_users": "RESTREAM_HEAVY_USERS",
    "clock_ms": "RESTREAM_CLOCK_MS",
    "events": "RESTREAM_EVENTS",
    "users": "RESTREAM_USERS",
    "days": "RESTREAM_DAYS",
    "repeat": "RESTREAM_REPEAT",
    "epoch_size": "RESTREAM_EPOCH_SIZE",
}
_VALUES = {"scenario": "skewed", "hot_share": "0.25", "heavy_share": "0.125"}


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "social"],
        ["demo"],
        ["bench", "engine"],
        ["bench", "lateness"],
        ["bench", "e2e"],
        ["bench", "checkpoint"],
    ],
    ids=" ".join,
)
def test_the_same_flag_reads_the_same_variable_in_every_command(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    for name, env in _SHARED_FLAGS.items():
        monkeypatch.setenv(env, _VALUES.get(name, "7"))
    args = _parse(command)
    for name in _SHARED_FLAGS:
        if hasattr(args, name):
            assert str(getattr(args, name)) == _VALUES.get(name, "7"), name


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["bench", "engine"], "RESTREAM_EVENTS"),
        (["bench", "engine"], "RESTREAM_JITTER_MS"),
        (["bench", "engine"], "RESTREAM_SCENARIO"),
        (["bench", "lateness"], "RESTREAM_REPEAT"),
        (["bench", "e2e"], "RESTREAM_EXECUTOR"),
    ],
)
def test_bad_env_values_of_the_benches_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    env: str,
) -> None:
    monkeypatch.setenv(env, "soon")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(command)
    assert exit_info.value.code == 2
    assert env in capsys.readouterr().err


def test_every_bench_flag_shows_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["bench", "engine"], ["bench", "lateness"], ["plan"]):
        # every flag's help ends in [env RESTREAM_<FLAG>...]; no command has its own prefix
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "BENCH_" not in text
        assert "[env RESTREAM_" in text


def test_run_and_plan_require_a_pipeline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RESTREAM_PIPELINE", raising=False)
    assert cli.main(["run", "--job-id", "j", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "pipeline (--pipeline, RESTREAM_PIPELINE): is required" in capsys.readouterr().err
    assert cli.main(["plan"]) == 2
    assert "RESTREAM_PIPELINE" in capsys.readouterr().err
    assert cli.main(["plan", "social-spam"]) == 0
    assert "phase 0" in capsys.readouterr().out
    monkeypatch.setenv("RESTREAM_PIPELINE", "social-spam")
    assert cli.main(["plan"]) == 0


def test_an_unused_bad_env_var_does_not_break_other_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESTREAM_JITTER_MS", "soon")  # only `generate social` has --jitter-ms
    assert _parse(["demo"]).users == 100_000


def test_generate_without_bootstrap_is_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RESTREAM_BOOTSTRAP", raising=False)
    assert cli.main(["generate", "social"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_failures_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tooling.generate

    def fail(**kwargs: object) -> int:
        raise BrokerError("the broker went away")

    monkeypatch.setattr(tooling.generate, "generate_social_command", fail)
    assert cli.main(["generate", "social", "--bootstrap", "h:1"]) == 1
    assert "the broker went away" in capsys.readouterr().err


def test_bad_generator_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["generate", "social", "--bootstrap", "h:1", "--users", "1"]) == 2
    assert "users" in capsys.readouterr().err


def test_sigterm_is_an_interrupt_for_the_demo_and_benches_then_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), cli._terminate_as_interrupt(True):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is before
    with cli._terminate_as_interrupt(False):
        assert signal.getsignal(signal.SIGTERM) is before  # restream run keeps its own


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    cleaned = False
    with pytest.raises(KeyboardInterrupt), cli._terminate_as_interrupt(True):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored while cleaning up
            cleaned = True
    assert cleaned


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["load", "pay.csv", "--timestamp", "ts", "--bootstrap", "b:9092"], "--topic"),
        (["load", "pay.csv", "--topic", "t", "--bootstrap", "b:9092"], "--timestamp"),
        (["load", "pay.csv", "--topic", "t", "--timestamp", "ts"], "--bootstrap"),
        (
            ["load", "pay.txt", "--topic", "t", "--timestamp", "ts", "--bootstrap", "b:9"],
            "--format",
        ),
    ],
)
def test_load_without_what_it_needs_exits_2_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "pay.txt").write_text("ts\n1\n")
    argv = [str(tmp_path / a) if a.startswith("pay.") else a for a in argv]
    assert cli.main(argv) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "positions"])
def test_help_lists_the_choices_of_every_choice_setting(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.config import SETTINGS

    monkeypatch.setenv("COLUMNS", "400")  # no line break inside avro-confluent
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    choice_settings = [s for s in SETTINGS if s.kind == "choice"]
    assert {"executor", "value_format", "on_bad_record"} <= {s.name for s in choice_settings}
    for s in choice_settings:
        assert s.choices, s.name
        # In the usage line and in the flag's help, from the table's choices.
        assert f"{s.flag} {{{','.join(s.choices)}}}" in text
        assert "one of " + ", ".join(s.choices) in text
