"""``mechwork sae``: train a tiny SAE on modadd-113 into a directory and measure it with ``sae info`` (the numbers
are the library's on the saved SAE); ``sae info`` of a preset lists its shipped SAEs; a run's SAE goes to
RUN/saes/HOOK by default. Every bad argument: one line, exit 2, nothing written, refused before the model loads
(before torch is imported, where it can be); a hook the model does not have names the nearest one."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from clirun import forbid_loading, refused, run

from mechwork.cli import main

HOOK = "blocks.0.mlp.hook_post"




def test_train_then_info_on_modadd(capsys, tmp_path):
    out_dir = tmp_path / "sae"
    code, out, err = run(capsys, "sae", "train", "modadd-113", "--hook", HOOK, "--positions", "mask", "--d-sae", "64",
                         "--k", "8", "--steps", "40", "--batch-size", "256", "--out", str(out_dir))
    assert code == 0, err
    assert out.startswith("topk k=8 SAE 512->64 at blocks.0.mlp.hook_post, 40 steps on 12769 activations")
    assert "data: modadd-113, its train + test splits (12,769 sequences), the positions its loss counts" in out
    assert f"wrote {out_dir}" in out
    assert (out_dir / "cfg.json").is_file() and (out_dir / "sae_weights.safetensors").is_file()
    cfg = json.loads((out_dir / "cfg.json").read_text())
    assert (cfg["d_in"], cfg["d_sae"], cfg["k"], cfg["metadata"]["positions"]) == (512, 64, 8, "mask")
    assert cfg["metadata"]["model_name"] == "modadd-113" and cfg["metadata"]["hook_name"] == HOOK
    trained = re.search(r"loss recovered (-?\d+\.\d+)%", out)
    assert trained is not None

    code, info, err = run(capsys, "sae", "info", str(out_dir))
    assert code == 0, err
    assert info.startswith(f"{out_dir}: topk SAE 512 -> 64, k=8 at {HOOK} of modadd-113 (positions: mask)")
    shown = re.search(r"L0 ([\d.]+), fraction of variance explained ([\d.]+)%, (\d+) dead latents?", info)
    rec = re.search(r"loss recovered (-?\d+\.\d+)%", info)
    assert shown is not None and rec is not None
    assert rec.group(1) == trained.group(1)  # the same SAE measured the same way as after training

    import mechwork
    from mechwork.analysis.saeio import load_sae
    from mechwork.analysis.saemetrics import evaluate_sae

    task = mechwork.preset("modadd-113").task
    m = evaluate_sae(mechwork.load("modadd-113"), load_sae(out_dir), task.batch("all"))
    assert float(shown.group(1)) == pytest.approx(m.l0, abs=0.01)
    assert float(rec.group(1)) == pytest.approx(100 * m.loss_recovered, abs=0.01)
    assert int(shown.group(3)) == m.n_dead


def test_info_of_a_preset_measures_its_shipped_sae(capsys):
    code, out, err = run(capsys, "sae", "info", "modadd-113", "--hook", HOOK)
    assert code == 0, err
    assert f"modadd-113/{HOOK}: topk SAE 512 -> " in out and "(positions: mask)" in out
    rec = re.search(r"loss recovered (-?\d+\.\d+)%", out)
    assert rec is not None and float(rec.group(1)) >= 90.0


def test_a_runs_sae_goes_to_its_saes_directory(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "modadd", "--p", "11", "--steps", "5", "--out", str(run_dir), "--quiet"]) == 0
    code, out, err = run(capsys, "sae", "train", str(run_dir), "--hook", HOOK, "--positions", "mask", "--d-sae", "16",
                         "--k", "2", "--steps", "5", "--batch-size", "32")
    assert code == 0, err
    from mechwork.analysis.saestore import saes_for

    assert set(saes_for(run_dir)) == {HOOK} and saes_for(run_dir)[HOOK] == run_dir / "saes" / HOOK
    code, out, err = run(capsys, "sae", "info", str(run_dir))
    assert code == 0, err
    assert f"at {HOOK} of {run_dir} (positions: mask)" in out and "loss recovered" in out


BAD = {
    "unknown_architecture": (["--architecture", "jumprelu"], ["'--architecture'", "'jumprelu'", "'topk', 'standard'"]),
    "k_above_d_sae": (["--k", "40", "--d-sae", "32"], ["'--k'", "at most --d-sae 32", "got 40"]),
    "k_zero": (["--k", "0"], ["'--k'", "0", "x>=1"]),
    "l1_zero": (["--architecture", "standard", "--l1", "0"], ["'--l1'", "finite number > 0", "got 0"]),
    "l1_negative": (["--architecture", "standard", "--l1", "-0.5"], ["'--l1'", "got -0.5"]),
    "l1_nan": (["--architecture", "standard", "--l1", "nan"], ["'--l1'", "got nan"]),
    "l1_on_topk": (["--l1", "0.01"], ["'--l1'", "standard only"]),
    "k_on_standard": (["--architecture", "standard", "--k", "4"], ["'--k'", "topk only"]),
    "lr_zero": (["--lr", "0"], ["'--lr'", "got 0"]),
    "steps_zero": (["--steps", "0"], ["'--steps'", "x>=1"]),
    "d_sae_zero": (["--d-sae", "0"], ["'--d-sae'", "x>=1"]),
    "unknown_positions": (["--positions", "last"], ["'--positions'", "'last'"]),
    "preset_without_out": (["--no-out"], ["'--out' is required", "modadd-113"]),
    "out_is_a_file": (["--out", "{tmp}/file.txt"], ["'--out'", "must be a directory", "file.txt"]),
    "out_not_empty": (["--out", "{tmp}"], ["'--out'", "is not empty", "--force"]),
    "unknown_model": (["--model", "no-such-model"], ["'no-such-model'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_train_argument_is_one_line_exit_2_before_the_model_loads(capsys, tmp_path, monkeypatch, case):
    extra, needles = BAD[case]
    (tmp_path / "file.txt").write_text("x")
    before = sorted(tmp_path.iterdir())
    model = "no-such-model" if case == "unknown_model" else "modadd-113"
    extra = [a for a in extra if a not in ("--model", "no-such-model", "--no-out")]
    out_args = [] if case == "preset_without_out" or "--out" in extra else ["--out", str(tmp_path / "new")]
    args = ["sae", "train", model, "--hook", HOOK, *[a.replace("{tmp}", str(tmp_path)) for a in extra], *out_args]

    forbid_loading(monkeypatch)
    assert refused(capsys, args, needles) == "" and sorted(tmp_path.iterdir()) == before


def test_bad_arguments_are_refused_before_torch_is_imported(tmp_path):
    code = ("import sys; from mechwork.cli import main\n"
            f"out = ['--out', {str(tmp_path / 'x')!r}]\n"
            "for args in (['--architecture', 'relu'], ['--k', '9', '--d-sae', '8'], ['--architecture', 'standard',\n"
            "             '--l1', '-1'], ['--l1', '0.1'], []):\n"
            "    assert main(['sae', 'train', 'modadd-113', '--hook', 'h', *args, *(out if args else [])]) == 2, args\n"
            "assert main(['sae', 'info', 'induction-2l', '--hook', 'blocks.0.hook_resid_pre']) == 2\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("mechwork: error:") == 6 and len(r.stderr.strip().splitlines()) == 6


def test_an_unknown_hook_names_the_nearest_one(capsys, tmp_path):
    code, out, err = run(capsys, "sae", "train", "modadd-113", "--hook", "blocks.0.mlp.hook_pots", "--out",
                         str(tmp_path / "sae"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["mechwork: error: 'hook' must be a hook point of the model; the nearest is "
                                        "'blocks.0.mlp.hook_post' (got 'blocks.0.mlp.hook_pots')"]
    assert not (tmp_path / "sae").exists()
    code, out, err = run(capsys, "sae", "info", "modadd-113", "--hook", "blocks.0.mlp.hook_pre")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"the nearest is '{HOOK}'" in err and "modadd-113's SAEs" in err


def test_info_refuses_what_has_no_sae(capsys, tmp_path):
    code, _out, err = run(capsys, "sae", "info", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no config.json" in err
