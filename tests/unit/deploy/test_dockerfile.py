"""deploy/Dockerfile and .dockerignore: the image's essentials, checked by reading them (no
Docker engine here to build the image)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.deploy import CHART, DEPLOY, IMAGE_UID, REPO, load_documents


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    arguments: str


def _instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        out.append(Instruction(keyword.upper(), re.sub(r"\s+", " ", arguments).strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
INSTRUCTIONS = _instructions(DOCKERFILE)
STAGES = _stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def _all(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.arguments for i in stage if i.keyword == keyword]


def test_parser_joins_continuations_and_skips_comments() -> None:
    parsed = _instructions("# c\nFROM a AS b\nRUN x \\\n  # inner\n  && y\nUSER 1\n")
    assert parsed == [
        Instruction("FROM", "a AS b"),
        Instruction("RUN", "x && y"),
        Instruction("USER", "1"),
    ]


def test_multi_stage_on_an_official_slim_python_base() -> None:
    assert len(STAGES) >= 2
    args = dict(a.split("=", 1) for a in _all(INSTRUCTIONS, "ARG") if "=" in a)
    for stage in STAGES:
        image = stage[0].arguments.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
    build_stage = STAGES[0][0].arguments.split()
    assert build_stage[1:] == ["AS", "build"]


def test_final_stage_copies_only_the_built_environment() -> None:
    copies = _all(FINAL, "COPY")
    assert copies == ["--from=build /opt/restream /opt/restream"]
    assert not _all(FINAL, "RUN"), "the final stage installs nothing: no caches, no compilers"
    assert not _all(FINAL, "ADD")


def test_build_stage_leaves_no_pip_cache_and_needs_no_compiler() -> None:
    runs = " ".join(_all(STAGES[0], "RUN"))
    assert "pip" in runs and "--no-cache-dir" in runs
    assert "PIP_NO_CACHE_DIR=1" in " ".join(_all(STAGES[0], "ENV"))
    assert not re.search(r"apt-get|gcc|build-essential|apk ", runs)


def test_runs_as_a_non_root_numeric_user() -> None:
    (user,) = _all(FINAL, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) == IMAGE_UID
    assert gid.isdigit() and int(gid) != 0


def test_entrypoint_is_the_restream_command() -> None:
    (entrypoint,) = _all(FINAL, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["restream"]
    (cmd,) = _all(FINAL, "CMD")
    assert json.loads(cmd) == ["--help"]


def test_works_with_a_read_only_root_filesystem() -> None:
    env = " ".join(_all(FINAL, "ENV"))
    # Python would otherwise try to write __pycache__ next to the installed modules.
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert _all(FINAL, "WORKDIR") == ["/tmp"]


def test_no_secrets_in_the_image() -> None:
    for ins in INSTRUCTIONS:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(?i)password|secret|token|api_?key|credential", ins.arguments)
        if ins.keyword in ("COPY", "ADD"):
            assert not re.search(r"(?i)\.env\b|\.pem\b|\.key\b|id_rsa|\.netrc", ins.arguments)
    assert not re.search(r"(?i)curl |wget |https?://", " ".join(_all(INSTRUCTIONS, "RUN")))


def test_image_user_is_the_one_that_pods_run_as() -> None:
    job = load_documents((DEPLOY / "k8s" / "job.yaml").read_text())[0]
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == IMAGE_UID
    values = load_documents((CHART / "values.yaml").read_text())[0]
    assert values["podSecurityContext"]["runAsUser"] == IMAGE_UID


# -- .dockerignore ------------------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per line, in order; the last matching rule decides."""
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part in ("**", "**/"):
                regex += ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((negated, re.compile(regex)))
    return rules


def _ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (a rule on a directory also
    covers what is under it)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in _ignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_matcher() -> None:
    assert _ignored(".git/config")
    assert not _ignored("connector/cli/app.py")
    assert _ignored("connector/__pycache__/cli.cpython-311.pyc")


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/__init__.py",
        "data/social.parquet",
        ".mypy_cache/x",
        "deploy/k8s/job.yaml",
        "helm/restream/values.yaml",
        ".env",
        "bench-engine.json",
        "engine/__pycache__/log.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_the_context_lean(path: str) -> None:
    assert _ignored(path)


def test_dockerignore_keeps_everything_the_build_copies() -> None:
    sources = []
    for arguments in _all(STAGES[0], "COPY"):
        *paths, _destination = arguments.split()
        sources += paths
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if not _ignored(f.relative_to(REPO).as_posix())]
        assert kept, f"{source} is copied but .dockerignore leaves it out"
        if path.is_dir():
            assert all(
                not _ignored(f.relative_to(REPO).as_posix())
                for f in files
                if f.suffix in (".py", ".avsc", ".typed")
            ), source
    # pyproject.toml names README.md as the package's readme: the build needs it.
    assert 'readme = "README.md"' in (REPO / "pyproject.toml").read_text()
    assert "README.md" in sources


def test_copied_schemas_are_installed_as_package_data() -> None:
    """The image finds schemas under sys.prefix/share/restream/schemas (connector.serde.avro)."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"share/restream/schemas/social" = ["schemas/social/*.avsc"]' in pyproject
    assert Path(REPO / "schemas" / "social").is_dir()


def test_compiled_kernels_cache_under_the_writable_home() -> None:
    """The image's only writable place is /tmp (HOME); numba's cache goes there too."""
    env = " ".join(_all(FINAL, "ENV"))
    assert "HOME=/tmp" in env
    assert re.search(r"NUMBA_CACHE_DIR=/tmp/\S+", env)


def test_extras_are_a_build_argument_off_by_default() -> None:
    """`--build-arg EXTRAS=ray` installs restream[ray] for a Ray cluster; the default image
    installs no extra, so it stays light."""
    (extras,) = [a for a in _all(STAGES[0], "ARG") if a.startswith("EXTRAS")]
    assert extras in ('EXTRAS=""', "EXTRAS=", "EXTRAS")
    (install,) = [r for r in _all(STAGES[0], "RUN") if "install" in r]
    # POSIX sh: "." without extras, ".[ray]" with EXTRAS=ray.
    assert '".${EXTRAS:+[${EXTRAS}]}"' in install
