"""ruff stays clean: run as part of the suite so CI enforces it.

mypy is not run here: it is its own CI step (``make lint``, called by ``.ci/run`` before ``make test``), with
its incremental cache and no timeout, so a loaded machine slows it down but cannot fail it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_ruff_clean():
    res = subprocess.run([_tool("ruff"), "check", "mechwork", "tests", "benchmarks", "experiments"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ci_runs_lint_then_the_readme_test_command():
    """mypy left the suite for `make lint`: CI must still run it, before the suite, and `make lint` must run mypy."""
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [line.strip() for line in ci.splitlines() if line.strip().startswith("make ")]
    assert steps == ["make lint", "make test"], steps
    lint = _make_target(ROOT / "Makefile", "lint")
    assert any("mypy mechwork" in line for line in lint) and any("ruff check" in line for line in lint), lint


def _make_target(makefile: Path, name: str) -> list[str]:
    """The recipe lines of one Makefile target."""
    lines, out, inside = makefile.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith(f"{name}:"):
            inside = True
        elif inside and line.startswith("\t"):
            out.append(line.strip())
        elif inside:
            break
    return out
