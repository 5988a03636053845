"""A user's kit, defined in one file outside the package (tests/kits/first_token.py), works with the whole CLI.

``mechwork --kit FILE`` (or ``MECHWORK_KITS``) registers it; then ``train``, ``info``, ``patch`` and
``dashboard`` run on it with nothing in mechwork/ knowing the task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parent / "kits" / "first_token.py"


def mechwork(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mechwork.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("user-kit") / "run"
    res = mechwork("--kit", str(KIT), "train", "first_token", "--steps", "120", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    return out, res.stdout


def test_train_reduces_the_loss(trained):
    out, stdout = trained
    assert f"{out}: step 120" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == {"kind": "first_token", "d_vocab": 12, "seq_len": 6, "batch_size": 64, "n_eval": 256,
                           "seed": 0}
    assert cfg["model"]["n_layers"] == 1 and cfg["model"]["d_mlp"] is None  # the kit's model, not a fallback
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] < 0.5 * rows[0]["test_loss"] and rows[-1]["test_acc"] > 0.5


def test_info_names_the_task(trained):
    out, _ = trained
    res = mechwork("info", str(out), env={"MECHWORK_KITS": str(KIT)})  # the environment variable works too
    assert res.returncode == 0, res.stderr
    assert "first token: 6 random tokens of 12, label = the first" in res.stdout
    assert "a fresh batch per step" in res.stdout and "last eval (step 120" in res.stdout


def test_patch_prints_cells(trained):
    out, _ = trained
    res = mechwork("--kit", str(KIT), "patch", str(out), "--site", "z", "--by", "head_pos")
    assert res.returncode == 0, res.stderr
    assert "corrupted: first token + 1" in res.stdout
    cells = [ln for ln in res.stdout.splitlines() if ln.startswith("    L0H")]
    assert len(cells) == 10, res.stdout


def test_dashboard_shows_the_kits_own_result(trained, tmp_path):
    out, _ = trained
    page = tmp_path / "first.html"
    res = mechwork("--kit", str(KIT), "dashboard", str(out), "--out", str(page))
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    assert "first-token accuracy by position" in html and "accuracy_by_position" in html


def test_without_the_kit_its_run_is_one_line(trained):
    out, _ = trained
    res = mechwork("info", str(out))  # the run's file is fine: the command lacks its kit, a bad invocation
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "'task.kind' must be one of modadd, induction, or the kind of a kit loaded with --kit" in res.stderr
    assert "(got 'first_token')" in res.stderr


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--kit", "no/such/kit.py", "info", "modadd-113"], {}, "Invalid value for '--kit': 'kit' must be a .py file"),
    (["info", "modadd-113"], {"MECHWORK_KITS": "no_such_module_xyz"}, "MECHWORK_KITS: cannot load kit"),
    (["--kit", "json", "info", "modadd-113"], {}, "kit 'json' registered no kit"),
])
def test_a_bad_kit_is_one_line_exit_2(args, env, needle, tmp_path):
    res = mechwork(*args, env=env, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("mechwork: error: ") and needle in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []
