"""The import contracts `make lint` checks (.importlinter) hold, and a module breaking one fails the check.

The packages are copied into a temporary directory, a module that breaks a contract is written into the
copy, and import-linter runs on the copy with the project's own configuration: the same check `make lint`
runs, proven to fail on a violation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"davit": ROOT / "shared", "davit_cli": ROOT / "shared", "davit_services": ROOT / "services"}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the three root packages and the contracts; the copy shadows the installed packages."""
    for package, parent in PACKAGES.items():
        shutil.copytree(
            parent / package,
            tmp_path / parent.name / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "shared"), str(tree / "services")]))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / ".importlinter")],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def write(tree: Path, relative: str, source: str) -> None:
    (tree / relative).write_text(f'"""A module breaking a contract."""\n\n{source}\n')


def test_the_project_keeps_its_contracts(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


#: A module breaking each contract, and the import the check must name.
VIOLATIONS = [
    (
        "services/davit_services/watcher/stray.py",
        "import kubernetes",
        "davit_services.watcher.stray -> kubernetes",
    ),
    ("shared/davit/stray_redis.py", "import redis", "davit.stray_redis -> redis"),
    ("shared/davit_cli/stray.py", "from celery import Celery", "davit_cli.stray -> celery"),
    ("shared/davit/api/stray.py", "from davit.kube import client", "davit.api.stray -> davit.kube.client"),
    (
        "services/davit_services/restore/stray.py",
        "from davit_services.backup import rule_runner",
        "davit_services.restore.stray -> davit_services.backup.rule_runner",
    ),
    ("shared/davit/stray_cli.py", "import davit_cli.context", "davit.stray_cli -> davit_cli.context"),
]


def test_a_module_breaking_a_contract_fails_the_check(tree: Path) -> None:
    for relative, source, _broken in VIOLATIONS:
        write(tree, relative, source)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert "6 broken" in result.stdout, result.stdout
    for _relative, _source, broken in VIOLATIONS:
        assert broken in result.stdout, (broken, result.stdout)
