"""``mechwork --task path/to/file.py:KitName``: a Kit object of a user's file, registered by name.

The kit is the README's own example (the ``mytask.py`` block of the section "Your own task"), written to a
temporary directory: trained with ``--task mytask.py:KIT train reverse``, then ``info``, ``patch`` (checked
against ``transformer_lens.patching``) and ``dashboard`` on its run, each in a new process. A file that
registers its kit itself is not registered twice. A missing file, a name the file does not define (its Kit
objects named), a name that is no Kit and a malformed spec are each one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mechwork import kit as kitmod
from mechwork.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIRST_TOKEN = ROOT / "tests" / "kits" / "first_token.py"  # registers its KIT itself


def example() -> str:
    """The task file the README shows: the python block right after its ``file mytask.py`` marker."""
    m = re.search(r"^<!-- readme-test: file mytask\.py -->\n```python\n(.*?)^```", (ROOT / "README.md").read_text(),
                  re.M | re.S)
    assert m is not None, "README.md has no python block marked 'file mytask.py'"
    return m.group(1)


def mechwork(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mechwork.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1", "MECHWORK_QUIET": "1"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("task-file")
    (d / "mytask.py").write_text(example())
    return d


@pytest.fixture(scope="module")
def trained(workdir: Path) -> tuple[Path, str]:
    res = mechwork("--task", "mytask.py:KIT", "train", "reverse", "--n", "4", "--steps", "60", "--eval-every", "20",
                   "--out", "runs/rev", cwd=workdir)
    assert res.returncode == 0, res.stderr
    return workdir / "runs" / "rev", res.stdout


@pytest.fixture
def registry(monkeypatch):
    """The test leaves no user kit behind in this process."""
    monkeypatch.delenv("MECHWORK_KITS", raising=False)
    kitmod.get_kit("modadd"), kitmod.get_kit("induction")
    stores: tuple[dict[Any, Any], ...] = (kitmod._REGISTRY, kitmod._FILES, kitmod._PASSED)
    saved = [dict(store) for store in stores]
    yield
    for store, old in zip(stores, saved, strict=True):
        store.clear()
        store.update(old)


def test_train_uses_the_kit_of_the_file(trained):
    out, stdout = trained
    assert "runs/rev: step 60" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == {"kind": "reverse", "n": 4}  # --n is an option made from the task's field
    assert cfg["model"]["n_layers"] == 2 and cfg["model"]["n_ctx"] == 9 and cfg["model"]["d_mlp"] is None
    assert cfg["train"]["lr"] == 3e-3  # the kit's recipe
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][-1] == 60 and rows[-1]["test_loss"] < 0.8 * rows[0]["test_loss"]


def test_info_describes_the_run(trained):
    out, _ = trained
    res = mechwork("--task", "mytask.py:KIT", "info", str(out), cwd=out.parents[1])
    assert res.returncode == 0, res.stderr
    assert "task: reverse 4 random digits" in res.stdout and "last eval (step 60" in res.stdout


def test_patch_equals_transformer_lens(trained, registry):
    """The CLI's patching of the run, with the kit's probe, is TransformerLens's ``get_act_patch_resid_pre``."""
    import torch
    import transformer_lens.patching as tlp

    from mechwork.source import open_source

    out, _ = trained
    where = out.parents[1] / "resid.json"
    res = mechwork("--task", "mytask.py:KIT", "patch", str(out), "--site", "resid_pre", "--by", "layer_pos",
                   "--json", str(where), cwd=out.parents[1])
    assert res.returncode == 0, res.stderr
    assert "prompts: first digit + 1" in res.stdout
    got = json.loads(where.read_text())
    kind = kitmod.load_task(f"{out.parents[1] / 'mytask.py'}:KIT")
    src = open_source(out, history=False)
    model, probe = src.model, kitmod.get_kit(kind).probe(src.task, n=8, seed=0)
    _, cache = model.run_with_cache(probe.clean)
    ref = tlp.get_act_patch_resid_pre(model, probe.corrupted, cache, probe.metric)  # [layer, pos]
    values = torch.tensor(got["values"])
    assert values.shape == ref.shape == (2, 9)
    assert torch.allclose(values, ref.float().cpu(), atol=1e-5, rtol=0), (values - ref).abs().max()
    with torch.no_grad():
        clean = float(probe.metric(model(probe.clean)))
    assert got["clean"] == pytest.approx(clean, abs=1e-5)


def test_dashboard_renders_the_kits_results(trained):
    out, _ = trained
    page = out.parents[1] / "rev.html"
    res = mechwork("--task", "mytask.py:KIT", "dashboard", str(out), "--out", str(page), cwd=out.parents[1])
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    assert "reverse 4 random digits" in html and "attention" in html.lower()


def test_a_kit_the_file_registers_itself_is_registered_once(registry, tmp_path):
    first = kitmod.load_task(f"{FIRST_TOKEN}:KIT")
    module = kitmod._FILES[FIRST_TOKEN.resolve()]
    kit = kitmod.get_kit(first)
    assert first == "first_token" and kit is module.KIT
    assert kitmod.load_task(f"{FIRST_TOKEN}:KIT") == first and kitmod.get_kit(first) is kit  # named twice
    assert vars(kit.analyse)["__wrapped__"] is module.analyse  # wrapped for one-line errors once, not twice
    # a file that keeps the Kit it passed to register(): the registered (wrapped) copy is not replaced either
    text = (ROOT / "tests" / "kits" / "minimal.py").read_text().replace("KIT = register(Kit(", "KIT = (Kit(")
    (tmp_path / "kept.py").write_text(text + "\nREGISTERED = register(KIT)\n")
    assert kitmod.load_task(f"{tmp_path / 'kept.py'}:KIT") == "minimal"
    assert kitmod.get_kit("minimal") is kitmod._FILES[(tmp_path / "kept.py").resolve()].REGISTERED


def test_a_kit_the_file_does_not_register_is_registered(registry, tmp_path):
    (tmp_path / "mytask.py").write_text(example())
    assert "reverse" not in kitmod.kinds()
    assert kitmod.load_task(f"{tmp_path / 'mytask.py'}:KIT") == "reverse"
    module = kitmod._FILES[(tmp_path / "mytask.py").resolve()]
    assert "reverse" in kitmod.kinds() and vars(kitmod.get_kit("reverse").analyse)["__wrapped__"] is module.KIT.analyse
    with pytest.raises(ConfigError, match=r"does not define 'KITT' \(the Kit objects it defines: KIT\)"):
        kitmod.load_task(f"{tmp_path / 'mytask.py'}:KITT")


@pytest.mark.parametrize(("spec", "needle"), [
    ("nosuch.py:KIT", "Invalid value for '--task': task file 'nosuch.py' does not exist"),
    ("mytask.py:KITT", "Invalid value for '--task': mytask.py does not define 'KITT' (the Kit objects it defines: "
                       "KIT)"),
    ("mytask.py:Reverse", "Invalid value for '--task': mytask.py:Reverse must be a mechwork.Kit (got type)"),
    ("mytask.py:torch", "Invalid value for '--task': mytask.py:torch must be a mechwork.Kit (got module)"),
    ("mytask.py", "'task' must be path/to/file.py:KitName (got 'mytask.py')"),
    ("sub:KIT", "task file 'sub' is not a file"),
    ("broken.py:KIT", "cannot load task file 'broken.py': ZeroDivisionError: division by zero"),
])
def test_a_bad_task_is_one_line_exit_2(spec, needle, tmp_path):
    (tmp_path / "mytask.py").write_text(example())
    (tmp_path / "broken.py").write_text("1 / 0\n")
    (tmp_path / "sub").mkdir()
    before = sorted(tmp_path.iterdir())
    res = mechwork("--task", spec, "train", "reverse", "--steps", "5", "--out", "runs/x", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("mechwork: error: ") and needle in res.stderr, res.stderr
    assert sorted(p for p in tmp_path.iterdir() if p.name != "__pycache__") == before  # nothing written


def test_kit_of_a_file_that_registers_nothing_points_to_task(registry, tmp_path):
    (tmp_path / "mytask.py").write_text(example())
    spec = str(tmp_path / "mytask.py")
    with pytest.raises(ConfigError, match=rf"registered no kit \(call mechwork.kit.register\(Kit\(...\)\) in it, or "
                                          rf"name its Kit with --task {re.escape(spec)}:KIT\)"):
        kitmod.load_kits(spec)
    assert "reverse" not in kitmod.kinds()
