"""Production (the ``worker`` package) never imports the development tools (``devstack``).

The container image holds ``worker`` alone, so an import of ``devstack``, moto or flask from
production code would fail there; these tests catch it here, statically and at run time, and
check that the command line without the development tools still works and says what is missing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
WORKSHOP: Final = ("devstack", "moto", "flask")
# Python that hides devstack as if it were not installed, then runs the CLI.
WITHOUT_DEVSTACK: Final = (
    "import sys; sys.modules['devstack'] = None; "
    "from worker.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """This test's own interpreter with fixed arguments (no untrusted input)."""
    return subprocess.run(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, *args], capture_output=True, text=True, check=False, timeout=60
    )


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_production_module_imports_the_development_tools() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(
            name for name in _imported_names(path) if name.split(".")[0] in {"devstack", "moto"}
        )
        for path in sorted((REPO_ROOT / "worker").rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_what_run_and_check_load_holds_no_development_module() -> None:
    """Everything ``run`` and ``check`` import, in a fresh interpreter: no workshop module."""
    code = (
        "import sys, worker.cli, worker.app, worker.logs, worker.metrics, worker.settings; "
        f"print(sorted(m for m in sys.modules if m.startswith({WORKSHOP!r})))"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_development_tools_the_cli_offers_only_production_commands() -> None:
    result = _python("-c", WITHOUT_DEVSTACK, "--help")
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "check" in result.stdout
    for development_command in ("local", "emulator", "send"):
        assert f"    {development_command} " not in result.stdout


def test_check_local_without_the_development_tools_is_a_usage_error_saying_why() -> None:
    result = _python("-c", WITHOUT_DEVSTACK, "check", "--local", "hello")
    assert result.returncode == 2
    assert "--local needs the development tools" in result.stderr


def test_with_the_development_tools_the_cli_offers_their_commands() -> None:
    result = _python("-m", "worker.cli", "--help")
    assert result.returncode == 0, result.stderr
    for development_command in ("local", "emulator", "send"):
        assert f"    {development_command} " in result.stdout
