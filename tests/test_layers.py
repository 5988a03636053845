"""The layer contract in pyproject.toml holds, and the checker that holds it can fail.

`lint-imports` checks the import graph of mechwork/ against the contracts in pyproject.toml: the layers
(core <- analysis <- tasks <- dashboard, report, summary <- cli, studies), analysis never importing training,
tasks, dashboard or studies, the package never importing experiments/, and no cycles between siblings.
The counter-checks copy the package, add one forbidden import, and watch the same command fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # no cache: a copy of the package must be read afresh
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_lint_imports_keeps_every_contract() -> None:
    res = _lint_imports(ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    assert kept is not None, out[-2000:]
    assert int(kept.group(1)) >= 4 and kept.group(2) == "0"


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and pyproject.toml in which ``module`` gains ``line``."""
    shutil.copytree(ROOT / "mechwork", tmp_path / "mechwork", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "mechwork" / module
    target.write_text(target.read_text() + f"\n\n{line}\n")
    return tmp_path


def _imports_from(path: Path) -> str:
    code = ("import mechwork, pathlib; print(pathlib.Path(mechwork.__file__).parent)")
    return subprocess.run([sys.executable, "-c", code], cwd=path, env={**os.environ, "PYTHONPATH": str(path)},
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("analysis/metrics.py", "from mechwork.dashboard import page  # noqa", "layers"),
        ("analysis/metrics.py", "import mechwork.training  # noqa", "analysis never trains"),
        ("models.py", "import mechwork.tasks  # noqa", "layers"),
        ("errors.py", "import mechwork.io  # noqa", "no import cycles"),
        ("runs.py", "import experiments  # noqa", "never imports the experiment scripts"),
    ],
)
def test_lint_imports_fails_on_a_forbidden_import(tmp_path: Path, module: str, line: str, broken: str) -> None:
    copy = _copy_with(tmp_path, module, line)
    assert _imports_from(copy) == str(copy / "mechwork")  # the copy, not the installed package, is checked
    res = _lint_imports(copy, pythonpath=copy)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert re.search(r"Contracts: \d+ kept, [1-9]\d* broken", out), out[-3000:]
    assert broken in out
