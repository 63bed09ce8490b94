"""Settings: flag > env > file > default, validation that names the field, secrets masked."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from connector.config import (
    SETTINGS,
    BadRecordLimit,
    RunConfig,
    add_settings_arguments,
    config_from_args,
    is_secret_key,
    load_config,
    redacted,
)
from connector.errors import ConfigError


def parse(argv: list[str], environ: dict[str, str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    return config_from_args(parser.parse_args(argv), environ=environ or {})


def test_defaults_without_any_source() -> None:
    config = parse([])
    assert config.start == "earliest"
    assert config.end == "latest"
    assert config.on_bad_record == "dead-letter"
    assert config.executor == "parallel"
    assert config.inputs == ()


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("start: ts:1000\nend: ts:9000\nepoch_size: 5\nworkers: 3\n")
    environ = {"RESTREAM_END": "ts:8000", "RESTREAM_EPOCH_SIZE": "7"}
    config = parse(["--config", str(path), "--epoch-size", "9"], environ)
    assert config.start == "ts:1000"  # file
    assert config.end == "ts:8000"  # env beats file
    assert config.epoch_size == 9  # flag beats env
    assert config.workers == 3


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job_id: from-file\n")
    assert parse([], {"RESTREAM_CONFIG": str(path)}).job_id == "from-file"


def test_lists_and_mappings_from_every_source(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "inputs: {a: message, b: friendship}\n"
        "schemas: [message=x/Message]\n"
        "kafka: {security.protocol: SASL_SSL, sasl.username: u}\n"
    )
    environ = {
        "RESTREAM_SCHEMAS": "friendship=x/Friendship",
        "RESTREAM_KAFKA_SASL_PASSWORD": "hunter2",
    }
    config = parse(
        ["--config", str(path), "--kafka", "client.id=me", "--schemas", "message=y/M"], environ
    )
    assert config.inputs == (("a", "message"), ("b", "friendship"))
    assert dict(config.schemas) == {"message": "y/M", "friendship": "x/Friendship"}
    assert dict(config.kafka) == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "u",
        "sasl.password": "hunter2",
        "client.id": "me",
    }
    # A list given by a higher layer replaces the lower one as a whole.
    assert parse(["--config", str(path), "--inputs", "c=message"]).inputs == (("c", "message"),)


@pytest.mark.parametrize(
    ("argv", "environ", "field", "words"),
    [
        (["--workers", "two"], {}, "--workers", "not an integer"),
        ([], {"RESTREAM_WORKERS": "-1"}, "RESTREAM_WORKERS", "must be >= 0"),
        (["--epoch-size", "-5"], {}, "epoch_size", "must be >= 0"),
        ([], {"RESTREAM_SINK_PROCESSES": "-2"}, "sink_processes", "must be >= 0"),
        (["--sink-processes", "many"], {}, "--sink-processes", "not an integer"),
        (["--on-bad-record", "drop"], {}, "on_bad_record", "dead-letter, fail"),
        (["--max-bad-records", "many"], {}, "max_bad_records", "a count N"),
        ([], {"RESTREAM_MAX_BAD_RECORDS": "-3"}, "RESTREAM_MAX_BAD_RECORDS", "a count N"),
        (["--max-bad-records", "150%"], {}, "--max-bad-records", "above 100%"),
        (["--value-format", "protobuf"], {}, "value_format", "avro, avro-confluent, json"),
        (["--job-id", "bad id!"], {}, "job_id", "letters, digits"),
        (["--metrics-port", "70000"], {}, "metrics_port", "TCP port"),
        (["--inputs", "topic-without-kind"], {}, "inputs", "TOPIC=KIND"),
        (["--inputs", "a=message", "--inputs", "a=friendship"], {}, "inputs", "listed twice"),
        (["--value-format", "avro-confluent"], {}, "schema_registry_url", "required"),
        (["--output-partitions", "0"], {}, "output_partitions", ">= 1"),
        (["--output-replication-factor", "0"], {}, "output_replication_factor", "-1 or >= 1"),
        (["--kafka", "bootstrap.servers=x:1"], {}, "kafka", "bootstrap_servers"),
        (
            ["--schema-registry-url", "http://r", "--schema-registry-basic-auth", "nocolon"],
            {},
            "schema_registry_basic_auth",
            "USER:PASSWORD",
        ),
    ],
)
def test_bad_values_name_the_setting(
    argv: list[str], environ: dict[str, str], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(argv, environ)
    assert field in str(info.value)
    assert words in str(info.value)


def test_bad_yaml_files(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("stat: earliest\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['stat'\]"):
        parse(["--config", str(unknown)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("start: [\n")
    with pytest.raises(ConfigError, match="is not YAML"):
        parse(["--config", str(broken)])
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("workers: many\n")
    with pytest.raises(ConfigError, match=r"workers \(--workers, RESTREAM_WORKERS\)"):
        parse(["--config", str(wrong_type)])
    with pytest.raises(ConfigError, match="cannot read"):
        parse(["--config", str(tmp_path / "missing.yaml")])


def test_secrets_never_shown() -> None:
    config = load_config(
        {
            "kafka": ["sasl.password=hunter2", "ssl.key.password=k", "sasl.username=u"],
            "schema_registry_url": "http://r",
            "schema_registry_basic_auth": "user:s3cret",
        },
        environ={},
    )
    text = repr(config) + repr(config.summary())
    assert "hunter2" not in text and "s3cret" not in text
    assert config.summary()["kafka"]["sasl.username"] == "u"
    assert redacted({"sasl.oauthbearer.client.secret": "x"}) == {
        "sasl.oauthbearer.client.secret": "***"
    }
    assert is_secret_key("ssl.key.pem") and not is_secret_key("security.protocol")


def test_every_setting_has_three_spellings_and_help() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    text = parser.format_help()
    for s in SETTINGS:
        assert s.flag in text
        assert (s.env if s.name != "kafka" else "RESTREAM_KAFKA_<KEY>") in text
        assert s.name in RunConfig.__dataclass_fields__


def test_run_config_is_the_table() -> None:
    """One field per setting, in the table's order, with the table's default; a choice
    setting's field is typed with the same Literal its choices come from."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(RunConfig)
    config = RunConfig()
    assert [f.name for f in dataclasses.fields(RunConfig)] == [s.name for s in SETTINGS]
    for s in SETTINGS:
        value = getattr(config, s.name)
        if s.kind == "list":
            assert value == ()
        elif s.kind == "mapping":
            assert dict(value) == {}
        else:
            assert value == s.default, s.name
        if s.kind == "choice":
            hint = hints[s.name]
            if typing.get_origin(hint) is not typing.Literal:  # Optional[Literal[...]]
                (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
            assert typing.get_args(hint) == s.choices, s.name


def test_help_shows_env_choices_and_default_from_the_table() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "[env RESTREAM_VALUE_FORMAT; one of avro, avro-confluent, json; default avro]" in text
    assert "[env RESTREAM_PIPELINE; required]" in text
    assert "[env RESTREAM_WORKERS; default 0]" in text


def test_required_settings_are_named_when_missing() -> None:
    config = parse([])
    for name in ("job_id", "pipeline", "bootstrap_servers"):
        with pytest.raises(ConfigError, match=rf"{name} \(--{name.replace('_', '-')}, "):
            config.require(name)
    assert parse(["--pipeline", "p"]).require("pipeline") == "p"


def test_bad_env_values_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"workers \(--workers, RESTREAM_WORKERS\)"):
        parse([], {"RESTREAM_WORKERS": "many"})
    with pytest.raises(ConfigError, match="RESTREAM_EXECUTOR"):
        parse([], {"RESTREAM_EXECUTOR": "spark"})


def test_ray_address_takes_a_cluster_address_and_defaults_to_ray_s_choice() -> None:
    assert RunConfig().ray_address == ""
    for good in ("10.0.0.5:6379", "ray://head.svc:10001", "auto", "local"):
        assert parse(["--executor", "ray"], {"RESTREAM_RAY_ADDRESS": good}).ray_address == good
    with pytest.raises(ConfigError, match=r"ray_address \(--ray-address, RESTREAM_RAY_ADDRESS\)"):
        parse(["--ray-address", "http://head/"])


def test_the_ray_executor_without_ray_installed_is_refused_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec: not importable
    with pytest.raises(ConfigError, match=re.escape("pip install 'restream[ray]'")):
        parse(["--executor", "ray"])


def test_max_bad_records_takes_a_count_or_a_share_and_defaults_to_half() -> None:
    assert RunConfig().max_bad_records == "50%"
    assert BadRecordLimit.parse("50%") == BadRecordLimit(percent=50.0)
    assert BadRecordLimit.parse(" 2.5 % ") == BadRecordLimit(percent=2.5)
    assert BadRecordLimit.parse("0") == BadRecordLimit(count=0)
    assert parse(["--max-bad-records", "1000"]).max_bad_records == "1000"
    assert parse([], {"RESTREAM_MAX_BAD_RECORDS": "5%"}).max_bad_records == "5%"


def test_a_bad_record_limit_judges_a_share_from_enough_records_or_at_the_end() -> None:
    half = BadRecordLimit.parse("50%")
    few = BadRecordLimit.MIN_RECORDS_FOR_SHARE - 1
    assert not half.exceeded(few, few, final=False)  # too early to judge a share
    assert half.exceeded(few, few, final=True)  # but all bad at the end fails
    assert half.exceeded(3, 3, final=True)  # however small the job
    assert not half.exceeded(5, 10, final=True)  # exactly the share is allowed
    assert half.exceeded(5001, 10_000, final=False)
    assert not half.exceeded(0, 0, final=True)  # nothing read, nothing bad
    assert not BadRecordLimit.parse("100%").exceeded(10, 10, final=True)
    count = BadRecordLimit.parse("2")
    assert not count.exceeded(2, 2, final=False) and count.exceeded(3, 10**9, final=False)
    assert str(half) == "50%" and str(count) == "2"
