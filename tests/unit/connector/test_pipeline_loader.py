"""``--pipeline`` and ``restream plan``: a file path or a module from the working directory,
and every loading error as one line and exit 2 (no traceback)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.cli import app as cli
from connector.errors import ConfigError
from connector.pipeline_loader import load_pipeline
from engine.pipeline import Pipeline

_PIPELINE = """
from engine.pipeline import Pipeline, Record

def build():
    p = Pipeline("fraud")
    n = p.count("n", on="payment", key="card")
    seen = p.lookup("seen", on="payment", table=n, key="card")
    out = p.output("flags", key="card")
    p.emit("flag", on="payment", output=out, inputs=[seen],
           fn=lambda e, view: [Record(e.card, {"card": e.card, "n": e.seen})])
    return p

pipeline = build()
threshold = 3
"""


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading puts folders on sys.path and modules in sys.modules: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _fails(spec: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(spec, field="pipeline")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_file_path_loads_a_pipeline_or_a_function_returning_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "rules/fraud_pipeline.py", _PIPELINE)
    monkeypatch.chdir(tmp_path)
    for spec in ("rules/fraud_pipeline.py:pipeline", "./rules/fraud_pipeline.py:build"):
        pipeline = load_pipeline(spec)
        assert isinstance(pipeline, Pipeline)
        assert pipeline.name == "fraud"
    absolute = load_pipeline(f"{tmp_path}/rules/fraud_pipeline.py:build")
    assert list(absolute.outputs) == ["flags"]


def test_a_file_imports_its_neighbours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "rules/helpers_for_fraud.py", "NAME = 'from-a-neighbour'\n")
    _write(
        tmp_path,
        "rules/main_rules.py",
        """
        from engine.pipeline import Pipeline
        from helpers_for_fraud import NAME
        pipeline = Pipeline(NAME)
        """,
    )
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("rules/main_rules.py:pipeline").name == "from-a-neighbour"


def test_a_module_is_found_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "fraud_module_cwd.py", _PIPELINE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_pipeline("fraud_module_cwd:build").name == "fraud"


def test_a_file_named_like_a_loaded_module_does_not_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    _write(tmp_path, "json.py", _PIPELINE)
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("./json.py:pipeline").name == "fraud"
    assert sys.modules["json"] is json


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("missing.py:pipeline", "missing.py does not exist (looked for "),
        ("rules/:pipeline", "rules/ is a directory"),
        ("no_such_module_xyz:build", "no module named 'no_such_module_xyz' in "),
        (
            "fraud.py:nothing",
            "fraud.py has no attribute 'nothing'; it has build(), make_dict(), pipeline (a ",
        ),
        ("fraud.py:threshold", "fraud.py:threshold is an int, not an engine.pipeline.Pipeline"),
        ("fraud.py:Record", "calling fraud.py:Record() failed: TypeError: "),
        ("fraud.py:make_dict", "fraud.py:make_dict() returned a dict, not an engine.pipeline"),
        ("fraud.py", "name the pipeline in it: 'fraud.py:ATTRIBUTE'"),
        ("fraud.py:1x", "'1x' after the ':' is not a Python name"),
        ("nonsense", "unknown pipeline 'nonsense'; use a built-in name (social-spam)"),
    ],
)
def test_every_loading_error_says_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, expected: str
) -> None:
    (tmp_path / "rules").mkdir()
    _write(tmp_path, "fraud.py", _PIPELINE + "\ndef make_dict():\n    return {}\n")
    monkeypatch.chdir(tmp_path)
    assert expected in _fails(spec)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("x = 1 +\n", "SyntaxError: invalid syntax ("),
        ("import numpyy_not_installed\n", "ModuleNotFoundError: No module named 'numpyy_not_"),
        ("\n\nraise RuntimeError('no\\nluck')\n", "RuntimeError: no luck ("),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3 ("),
    ],
)
def test_an_error_inside_the_users_module_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    path = _write(tmp_path, "broken_rules.py", body)
    monkeypatch.chdir(tmp_path)
    for spec in ("broken_rules.py:pipeline", "broken_rules:pipeline"):
        message = _fails(spec)
        assert expected in message
        assert f"{path}, line " in message


def test_an_error_while_building_names_the_users_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        "bad_build.py",
        """
        from engine.pipeline import Pipeline

        def build():
            p = Pipeline("x")
            p.count("n", on="payment", key="card")
            p.count("n", on="payment", key="card")
            return p
        """,
    )
    monkeypatch.chdir(tmp_path)
    message = _fails("bad_build.py:build")
    assert "calling bad_build.py:build() failed: PipelineError: " in message
    assert f"({path}, line 7)" in message


def test_plan_takes_a_file_and_every_error_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "plan_rules.py", _PIPELINE)
    _write(tmp_path, "plan_broken.py", "raise ValueError('boom')\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "./plan_rules.py:pipeline"]) == 0
    assert "phase 0" in capsys.readouterr().out
    for spec in ("./plan_broken.py:pipeline", "plan_rules.py:nope", "plan_nothing:x"):
        assert cli.main(["plan", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith("restream: bad configuration: pipeline (PIPELINE, ")
        assert err.count("\n") == 1, err
        assert "Traceback" not in err


def test_run_reports_a_loading_error_before_touching_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = cli.main(
        [
            "run",
            "--job-id",
            "j",
            "--bootstrap-servers",
            "127.0.0.1:1",  # nothing listens: a broker call would hang, then fail with 1
            "--pipeline",
            "./absent.py:pipeline",
            "--inputs",
            "t=payment",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pipeline (--pipeline, RESTREAM_PIPELINE): './absent.py:pipeline': " in err
    assert err.count("\n") == 1
