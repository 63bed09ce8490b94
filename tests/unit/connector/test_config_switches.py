"""Switch settings (``restart_from_scratch``): a bare flag, a true/false environment value or
YAML boolean, off by default and not shown as a default in ``--help``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connector.config import add_settings_arguments, config_from_args, load_config
from connector.errors import ConfigError


def test_the_flag_alone_switches_it_on() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    assert config_from_args(parser.parse_args([]), environ={}).restart_from_scratch is False
    args = parser.parse_args(["--restart-from-scratch"])
    assert config_from_args(args, environ={}).restart_from_scratch is True
    text = " ".join(parser.format_help().split())
    assert "[env RESTREAM_RESTART_FROM_SCRATCH]" in text


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("1", True), ("Yes", True), ("false", False), ("0", False)]
)
def test_the_environment_takes_true_or_false(text: str, value: bool) -> None:
    config = load_config({}, environ={"RESTREAM_RESTART_FROM_SCRATCH": text})
    assert config.restart_from_scratch is value


def test_other_values_are_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"RESTREAM_RESTART_FROM_SCRATCH\): 'maybe' is not true"):
        load_config({}, environ={"RESTREAM_RESTART_FROM_SCRATCH": "maybe"})
    path = tmp_path / "job.yaml"
    path.write_text("restart_from_scratch: true\n")
    assert load_config({}, config_file=str(path), environ={}).restart_from_scratch is True
    path.write_text("restart_from_scratch: 3\n")
    with pytest.raises(ConfigError, match=r"restart_from_scratch .*3 is not true or false"):
        load_config({}, config_file=str(path), environ={})
