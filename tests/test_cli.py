"""The CLI: one-line errors with exit code 2, nothing written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mechwork.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mechwork.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "modadd", "--p", "2"], "Invalid value for '--p': 2 is not in the range x>=3"),
        (["train", "modadd", "--p", "12", "--op", "div"], "'p' must be a prime >= 3 for op 'div'"),
        (["train", "modadd", "--op", "pow"], "Invalid value for '--op': 'pow' is not one of"),
        (["train", "modadd", "--train-frac", "1.5"], "Invalid value for '--train-frac': 1.5 is not in the range"),
        (["train", "modadd", "--lr", "-1"], "Invalid value for '--lr': -1.0 is not in the range x>0.0"),
        (["train", "modadd", "--steps", "0"], "Invalid value for '--steps': 0 is not in the range x>=1"),
        (["train", "modadd", "--seed", "abc"], "Invalid value for '--seed': 'abc' is not a valid integer"),
        (["train", "induction", "--seq-len", "4"], "Invalid value for '--seq-len': 4 is not in the range x>=8"),
        (["train", "induction", "--seq-len", "16", "--max-len", "9"], "'max_len' must be at most seq_len/2 = 8"),
        (["train", "sorting"], "No such command 'sorting'"),
        (["train", "modadd", "--decay-steps", "-1"], "Invalid value for '--decay-steps': -1 is not in the range"),
        (["train", "modadd", "--steps", "5", "--decay-steps", "9"], "'decay_steps' must be an integer in [0, steps=5]"),
        (["info", "no-such-run"], "'path_or_preset' must be"),
    ],
)
def test_bad_arguments_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    code = main([*args, "--out", str(tmp_path / "out")] if args[0] == "train" and len(args) > 2 else args)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mechwork: error: ") and needle in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # no run directory, no runs/ folder


def test_info_on_missing_run_dir_is_two(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_train_info_resume_and_refusals(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["train", "modadd", "--p", "11", "--train-frac", "0.5", "--out", str(out), "--quiet"]
    assert main([*base, "--steps", "20", "--eval-every", "10"]) == 0
    first = capsys.readouterr().out
    assert "step 20" in first and str(out) in first
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"]["p"] == 11 and cfg["train"]["steps"] == 20

    # existing non-empty --out is refused, and nothing changes
    before = (out / "metrics.jsonl").read_text()
    assert main([*base, "--steps", "30"]) == 2
    assert "exists and is not empty; pass --resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == before

    # --resume may extend --steps but not change the recipe
    assert main([*base, "--resume", "--lr", "0.1"]) == 2
    assert "--lr cannot change on --resume (the run has 0.01, got 0.1); only --steps may" in capsys.readouterr().err
    assert main([*base, "--resume", "--steps", "30"]) == 0
    assert "step 30" in capsys.readouterr().out

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "(a add b) mod 11" in info and "last eval (step 30" in info

    # --resume on a directory that is not a run
    assert main(["train", "modadd", "--out", str(tmp_path), "--resume", "--quiet"]) == 2
    assert "is not a run directory" in capsys.readouterr().err

    # --force overwrites
    assert main([*base, "--steps", "10", "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 10


def test_corrupt_checkpoint_exit_1_names_file(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["train", "modadd", "--p", "11", "--train-frac", "0.5", "--steps", "10", "--out", str(out), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    (out / "resume.safetensors").write_bytes(b"\x00" * 10)
    assert main(["train", "modadd", "--out", str(out), "--resume", "--steps", "20", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mechwork: error: corrupt checkpoint") and "resume.safetensors" in err
    assert len(err.splitlines()) == 1


def test_info_preset(capsys):
    assert main(["info", "modadd-113"]) == 0
    out = capsys.readouterr().out
    assert "d_model 128, 4 heads of 32, d_mlp 512 (relu), no LayerNorm" in out
    assert "attention biases frozen at 0" in out


def test_demo_prints_embedded_accuracy():
    res = run_cli("demo")
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "accuracy on all 12,769 pairs" in ln)
    acc = float(line.split(":")[1].split("%")[0])
    assert acc >= 99.5


def test_help_and_version():
    res = run_cli("--help")
    assert res.returncode == 0 and "train" in res.stdout and "info" in res.stdout
    assert run_cli("--version").returncode == 0


def test_train_induction_and_grokfast_flags(tmp_path, capsys):
    out = tmp_path / "ind"
    args = ["train", "induction", "--seq-len", "16", "--d-vocab", "16", "--steps", "4", "--eval-every", "2",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"]["kind"] == "induction" and cfg["model"]["n_layers"] == 2 and cfg["model"]["d_mlp"] is None
    assert main(["train", "modadd", "--out", str(out), "--resume", "--quiet"]) == 2
    assert "is an induction run, not modadd" in capsys.readouterr().err

    gf = tmp_path / "gf"
    assert main(["train", "modadd", "--p", "11", "--train-frac", "0.5", "--steps", "2", "--grokfast",
                 "--grokfast-lambda", "3", "--out", str(gf), "--quiet"]) == 0
    train_cfg = json.loads((gf / "config.json").read_text())["train"]
    assert train_cfg["grokfast_alpha"] == 0.98 and train_cfg["grokfast_lambda"] == 3.0


def test_analyze_fourier_preset_and_json(tmp_path, capsys):
    out = tmp_path / "f.json"
    assert main(["analyze", "fourier", "modadd-113", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "key frequencies" in text and "trig-identity logit fit" in text and "restricted loss" in text
    data = json.loads(out.read_text())
    assert data["key_frequencies"]["freqs"] and 0 < data["trig_fit"]["fve"] <= 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_analyze_fourier_bad_inputs(tmp_path, capsys):
    assert main(["analyze", "fourier", "nope"]) == 2
    assert "'path_or_preset' must be a run directory" in capsys.readouterr().err
    assert main(["analyze", "fourier", "modadd-113", "--json", str(tmp_path)]) == 2
    assert "must be a file path, not a directory" in capsys.readouterr().err
    assert main(["analyze", "fourier", "modadd-113", "--step", "5"]) == 2
    assert "'step' must be None for preset 'modadd-113' (got 5)" in capsys.readouterr().err
    assert main(["analyze", "fourier", "modadd-113", "--step", "-3"]) == 2
    assert "Invalid value for '--step'" in capsys.readouterr().err
    ind = tmp_path / "ind"
    assert main(["train", "induction", "--seq-len", "8", "--d-vocab", "8", "--steps", "1", "--out", str(ind),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", "fourier", str(ind)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a modular-arithmetic run or preset" in err and "whose task is induction" in err
    assert len(err.splitlines()) == 1


def test_analyze_fourier_run_reports_phases(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "modadd", "--p", "11", "--train-frac", "0.6", "--steps", "60", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["analyze", "fourier", str(out), "--json", str(tmp_path / "r.json")]) == 0
    assert "phase: end memorisation" in capsys.readouterr().out
    assert "progress" in json.loads((tmp_path / "r.json").read_text())
